"""Read what fix_mysql needs to plan from the configured MySQL/MariaDB database (reads only)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from django.db.backends.base.base import BaseDatabaseWrapper

from diagnostics.schema import missing_foreign_keys

TARGET_CHARSET = "utf8mb4"
# The collation when neither MYSQL_COLLATION nor a utf8mb4 database default names one.
FALLBACK_COLLATION = "utf8mb4_unicode_ci"
# Every character of these fits utf8mb4 unchanged, so their data needs no round-trip probe.
SUBSET_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8"})
RECOMMENDED_GLOBALS = ("innodb_buffer_pool_size", "max_connections", "wait_timeout", "interactive_timeout", "sql_mode")
SET_GLOBAL_PRIVILEGES = frozenset({"SUPER", "SYSTEM_VARIABLES_ADMIN"})


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    charset: str | None
    max_chars: int | None = None
    numeric_precision: int | None = None
    collation: str | None = None
    # MariaDB's JSON: LONGTEXT in utf8mb4_bin with a json_valid() CHECK. Binary by design (JSON
    # compares byte-wise): never part of the one-collation rule, and restored after CONVERT TO.
    json: bool = False
    nullable: bool = True
    column_type: str = ""


@dataclass(frozen=True)
class Index:
    name: str
    kind: str
    parts: tuple[tuple[str, int | None], ...]  # (column, prefix length in characters or None)


@dataclass(frozen=True)
class Table:
    name: str
    engine: str
    collation: str
    row_format: str
    rows: int
    columns: tuple[Column, ...] = ()
    indexes: tuple[Index, ...] = ()
    references: tuple[str, ...] = ()
    # Columns holding text that would not read back the same after conversion to utf8mb4.
    lossy_columns: tuple[str, ...] = ()

    @property
    def charset(self) -> str:
        return self.collation.split("_")[0] if self.collation else ""

    @property
    def needs_charset_conversion(self) -> bool:
        return self.charset != TARGET_CHARSET or any(
            column.charset not in (None, TARGET_CHARSET) for column in self.columns
        )

    def collation_differs(self, target: str) -> bool:
        """Return True when the table or one of its text columns (JSON aside) does not use the `target` collation."""
        return self.collation != target or bool(self.columns_collated_otherwise(target))

    def columns_collated_otherwise(self, target: str) -> list[Column]:
        """Return the text columns (JSON aside) whose collation is not `target`."""
        return [column for column in self.columns if column.collation not in (None, target) and not column.json]

    @property
    def json_columns(self) -> list[Column]:
        return [column for column in self.columns if column.json]

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclass(frozen=True)
class MissingForeignKey:
    table: str
    description: str
    parent: str
    sql: str
    orphans: int


@dataclass(frozen=True)
class Snapshot:
    database: str
    charset: str
    collation: str
    server: str
    default_row_format: str = "dynamic"
    tables: tuple[Table, ...] = ()
    missing_foreign_keys: tuple[MissingForeignKey, ...] = ()
    global_variables: dict[str, str] = field(default_factory=dict)
    buffer_pool_dynamic: bool = True
    can_set_globals: bool = False
    account: str = ""
    # Bytes per character of each character set (latin1 1, utf8mb3 3, utf8mb4 4, …).
    charset_maxlen: dict[str, int] = field(default_factory=lambda: {"utf8mb4": 4})
    # The one collation every table and text column should use (`target_collation`).
    target_collation: str = FALLBACK_COLLATION


def take_snapshot(connection: BaseDatabaseWrapper) -> Snapshot:
    """Read the database's charsets, engines, indexes, keys, risky data and global variables."""
    with connection.cursor() as cursor:
        database, charset, collation = _one(
            cursor,
            "SELECT SCHEMA_NAME, DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
            "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()",
        )
        tables = _read_tables(cursor)
        tables = tuple(_with_lossy_columns(cursor, table) for table in tables)
        global_variables = dict(
            zip(
                RECOMMENDED_GLOBALS,
                map(str, _one(cursor, "SELECT " + ", ".join(f"@@GLOBAL.{n}" for n in RECOMMENDED_GLOBALS))),
                strict=True,
            )
        )
        (row_format,) = _one(cursor, "SELECT @@GLOBAL.innodb_default_row_format")
        account, privileges = _account_privileges(cursor)
        dynamic = _buffer_pool_dynamic(cursor, connection)
        maxlen = dict(_all(cursor, "SELECT CHARACTER_SET_NAME, MAXLEN FROM information_schema.CHARACTER_SETS"))
        target = target_collation(cursor, database_collation=collation, tables=tables)
    name = "MariaDB" if connection.mysql_is_mariadb else "MySQL"
    return Snapshot(
        database=database,
        charset=charset,
        collation=collation,
        server=f"{name} {'.'.join(map(str, connection.mysql_version))}",
        default_row_format=str(row_format).lower(),
        tables=tables,
        missing_foreign_keys=tuple(_missing_foreign_keys(connection)),
        global_variables=global_variables,
        buffer_pool_dynamic=dynamic,
        can_set_globals=bool(privileges & SET_GLOBAL_PRIVILEGES) or "ALL PRIVILEGES" in privileges,
        account=account,
        charset_maxlen=maxlen,
        target_collation=target,
    )


def target_collation(
    cursor, *, database_collation: str, tables: Iterable[Table] = (), configured: str | None = None
) -> str:
    """Return the collation for every table and text column.

    `MYSQL_COLLATION` when set; else the database's default when it is a utf8mb4 one; else the
    utf8mb4 collation most tables already use (the least to convert); else the server's default
    utf8mb4 collation (MariaDB utf8mb4_general_ci, MySQL 8 utf8mb4_0900_ai_ci).
    """
    if configured is None:
        from django.conf import settings

        configured = getattr(settings, "MYSQL_COLLATION", "")
    if configured:
        return configured
    if (database_collation or "").startswith(f"{TARGET_CHARSET}_"):
        return database_collation
    in_use = Counter(table.collation for table in tables if table.charset == TARGET_CHARSET)
    if in_use:
        return in_use.most_common(1)[0][0]
    rows = _all(
        cursor,
        "SELECT DEFAULT_COLLATE_NAME FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = %s",
        [TARGET_CHARSET],
    )
    return str(rows[0][0]) if rows else FALLBACK_COLLATION


def read_table_overview(cursor) -> list[Table]:
    """Return every base table of the current database with its engine, collation and columns."""
    tables = [
        Table(
            name=name,
            engine=engine or "",
            collation=collation or "",
            row_format=(row_format or "").lower(),
            rows=rows or 0,
        )
        for name, engine, collation, row_format, rows in _all(
            cursor,
            "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION, ROW_FORMAT, TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
    ]
    json_checked = _json_checked_columns(cursor)
    columns: dict[str, list[Column]] = defaultdict(list)
    for table, name, data_type, charset, chars, precision, collation, nullable, column_type in _all(
        cursor,
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, "
        "COLLATION_NAME, IS_NULLABLE, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
    ):
        is_json = (table, name) in json_checked and collation == f"{TARGET_CHARSET}_bin"
        columns[table].append(
            Column(name, data_type, charset, chars, precision, collation, is_json, nullable == "YES", column_type)
        )
    return [replace(table, columns=tuple(columns[table.name])) for table in tables]


def _json_checked_columns(cursor) -> set[tuple[str, str]]:
    """Return the (table, column) pairs MariaDB declared as JSON (a `json_valid(col)` column CHECK).

    MySQL 8 has a native JSON type without a collation, and a CHECK_CONSTRAINTS view without
    TABLE_NAME: nothing to find there.
    """
    if not getattr(getattr(cursor, "db", None), "mysql_is_mariadb", False):
        return set()
    rows = _all(
        cursor,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = DATABASE() AND LEVEL = 'Column'",
    )
    return {(table, name) for table, name, clause in rows if clause == f"json_valid({quote(name)})"}


def _read_tables(cursor) -> list[Table]:
    indexes: dict[str, dict[str, tuple[str, list]]] = defaultdict(dict)
    for table, index, kind, column, sub_part in _all(
        cursor,
        "SELECT TABLE_NAME, INDEX_NAME, INDEX_TYPE, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    ):
        indexes[table].setdefault(index, (kind, []))[1].append((column, sub_part))
    references: dict[str, set[str]] = defaultdict(set)
    for table, parent in _all(
        cursor,
        "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = DATABASE()",
    ):
        references[table].add(parent)
    return [
        replace(
            table,
            indexes=tuple(Index(name, kind, tuple(parts)) for name, (kind, parts) in indexes[table.name].items()),
            references=tuple(sorted(references[table.name])),
        )
        for table in read_table_overview(cursor)
    ]


def _with_lossy_columns(cursor, table: Table) -> Table:
    """Count, in one scan, the values of each column that a round trip through utf8mb4 would change."""
    probed = [c for c in table.columns if c.charset and c.charset not in SUBSET_CHARSETS and c.charset != "binary"]
    if not table.needs_charset_conversion or not probed:
        return table
    checks = []
    for column in probed:
        if not re.fullmatch(r"\w+", column.charset):
            raise ValueError(f"unexpected character set name {column.charset!r}")
        quoted = quote(column.name)
        checks.append(
            f"COALESCE(SUM(CAST(CONVERT(CONVERT({quoted} USING {TARGET_CHARSET}) USING {column.charset}) AS BINARY)"
            f" <> CAST({quoted} AS BINARY)), 0)"
        )
    counts = _one(cursor, f"SELECT {', '.join(checks)} FROM {quote(table.name)}")
    lossy = tuple(column.name for column, count in zip(probed, counts, strict=True) if count)
    return replace(table, lossy_columns=lossy)


def _missing_foreign_keys(connection: BaseDatabaseWrapper) -> list[MissingForeignKey]:
    found = []
    editor = connection.schema_editor()
    with connection.cursor() as cursor:
        for fk in missing_foreign_keys(connection):
            (orphans,) = _one(
                cursor,
                f"SELECT COUNT(*) FROM {quote(fk.table)} AS c LEFT JOIN {quote(fk.parent)} AS p "
                f"ON c.{quote(fk.column)} = p.{quote(fk.parent_column)} "
                f"WHERE c.{quote(fk.column)} IS NOT NULL AND p.{quote(fk.parent_column)} IS NULL",
            )
            sql = str(editor._create_fk_sql(fk.model, fk.field, "_fk_%(to_table)s_%(to_column)s"))
            found.append(MissingForeignKey(fk.table, str(fk), fk.parent, sql, orphans))
    return found


def _account_privileges(cursor) -> tuple[str, set[str]]:
    (account,) = _one(cursor, "SELECT CURRENT_USER()")
    user, _, host = str(account).rpartition("@")
    rows = _all(
        cursor,
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s",
        [f"'{user}'@'{host}'"],
    )
    return str(account), {str(privilege).upper() for (privilege,) in rows}


def _buffer_pool_dynamic(cursor, connection: BaseDatabaseWrapper) -> bool:
    if not connection.mysql_is_mariadb:
        return connection.mysql_version >= (5, 7, 5)
    rows = _all(
        cursor,
        "SELECT READ_ONLY FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_SIZE'",
    )
    return bool(rows) and rows[0][0] == "NO"


def quote(name: str) -> str:
    """Quote a MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def _one(cursor, sql: str, params: list | None = None) -> tuple:
    cursor.execute(sql, params or [])
    return cursor.fetchone()


def _all(cursor, sql: str, params: list | None = None) -> list[tuple]:
    cursor.execute(sql, params or [])
    return list(cursor.fetchall())
