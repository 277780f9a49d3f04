"""What would make converting a table fail or damage it: index key limits, row size, lossy text."""

from __future__ import annotations

from diagnostics.fixes.snapshot import TARGET_CHARSET, Column, Snapshot, Table

# InnoDB with 16 KiB pages: a whole index key, and each column prefix under DYNAMIC/COMPRESSED.
INNODB_MAX_KEY_BYTES = 3072
# Each column prefix under the old COMPACT/REDUNDANT row formats.
INNODB_OLD_ROW_FORMAT_PREFIX_BYTES = 767
OLD_ROW_FORMATS = frozenset({"compact", "redundant"})
# All columns of a row together (every engine); TEXT/BLOB count only their pointer.
MAX_ROW_BYTES = 65535
FIXED_BYTES = {
    "tinyint": 1,
    "smallint": 2,
    "mediumint": 3,
    "int": 4,
    "bigint": 8,
    "float": 4,
    "double": 8,
    "date": 3,
    "time": 6,
    "year": 1,
    "datetime": 8,
    "timestamp": 7,
    "bit": 8,
    "enum": 2,
    "set": 8,
}
UNLIMITED_INDEX_KINDS = frozenset({"FULLTEXT", "SPATIAL"})


def engine_blockers(table: Table, snapshot: Snapshot) -> list[str]:
    """Return why moving the table to InnoDB (keeping its character sets) would fail."""
    return _index_problems(table, snapshot, lambda column: _maxlen(snapshot, column.charset), "InnoDB")


def charset_blockers(table: Table, snapshot: Snapshot) -> list[str]:
    """Return why converting the table to utf8mb4 would fail, truncate or change its text."""
    problems = []
    if table.lossy_columns:
        columns = ", ".join(f"{name} ({_charset_of(table, name)})" for name in table.lossy_columns)
        problems.append(
            f"column(s) {columns} hold bytes that are not valid text in their character set; "
            "converting would turn them into '?'. Find and repair those rows first (or change the column to "
            "VARBINARY/BLOB if it holds bytes, not text)"
        )
    target = snapshot.charset_maxlen.get(TARGET_CHARSET, 4)
    problems.extend(_index_problems(table, snapshot, lambda column: target, "utf8mb4"))
    row_bytes = sum(_stored_bytes(column, target) for column in table.columns)
    if row_bytes > MAX_ROW_BYTES:
        problems.append(
            f"its CHAR/VARCHAR columns would need {row_bytes} bytes per row in utf8mb4, over MySQL's "
            f"{MAX_ROW_BYTES}-byte row limit: change the widest ones to TEXT first"
        )
    return problems


def _index_problems(table: Table, snapshot: Snapshot, bytes_per_char, becoming: str) -> list[str]:
    row_format = table.row_format if table.engine == "InnoDB" else snapshot.default_row_format
    prefix_limit = INNODB_OLD_ROW_FORMAT_PREFIX_BYTES if row_format in OLD_ROW_FORMATS else INNODB_MAX_KEY_BYTES
    problems = []
    for index in table.indexes:
        if index.kind in UNLIMITED_INDEX_KINDS:
            continue
        parts = []
        for name, sub_part in index.parts:
            column = table.column(name)
            parts.append(_key_part_bytes(column, sub_part, bytes_per_char(column)) if column else 0)
        if max(parts, default=0) > prefix_limit or sum(parts) > INNODB_MAX_KEY_BYTES:
            limit = prefix_limit if max(parts, default=0) > prefix_limit else INNODB_MAX_KEY_BYTES
            problems.append(
                f"index {index.name} would need {sum(parts)} bytes as {becoming} ({row_format} row format), over "
                f"the {limit}-byte limit: the server would refuse or silently shorten it. Shorten the indexed "
                "column(s) or index a prefix first"
            )
    return problems


def _key_part_bytes(column: Column, sub_part: int | None, bytes_per_char: int) -> int:
    if column.charset:
        return (sub_part or column.max_chars or 0) * bytes_per_char
    if column.max_chars:  # BINARY/VARBINARY/BLOB: lengths are in bytes already
        return sub_part or column.max_chars
    if column.data_type == "decimal":
        return (column.numeric_precision or 10) // 2 + 1
    return FIXED_BYTES.get(column.data_type, 8)


def _stored_bytes(column: Column, bytes_per_char: int) -> int:
    if column.data_type not in ("char", "varchar") or not column.charset:
        return 0
    data = (column.max_chars or 0) * bytes_per_char
    return data + (0 if column.data_type == "char" else 1 if data < 256 else 2)


def _charset_of(table: Table, name: str) -> str:
    column = table.column(name)
    return column.charset or "binary" if column else "?"


def _maxlen(snapshot: Snapshot, charset: str | None) -> int:
    return snapshot.charset_maxlen.get(charset or "", 4)
