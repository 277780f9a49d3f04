"""Build fix_mysql's plan from a snapshot: a pure function, so the dry run is exactly what --apply runs."""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from diagnostics.fixes.safety import charset_blockers, engine_blockers
from diagnostics.fixes.snapshot import TARGET_CHARSET, Snapshot, Table, quote

BUFFER_POOL_BYTES = 256 * 1024 * 1024
MAX_CONNECTIONS = 150
TIMEOUT_SECONDS = 28800
STRICT_MODES = frozenset({"STRICT_TRANS_TABLES", "STRICT_ALL_TABLES"})


@dataclass(frozen=True)
class Fix:
    kind: str  # database, engine, charset, collation, foreign_key, global
    target: str
    reason: str
    sql: tuple[str, ...]
    rows: int | None = None


@dataclass(frozen=True)
class Skip:
    target: str
    reason: str


@dataclass(frozen=True)
class Plan:
    fixes: tuple[Fix, ...] = ()
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return not self.fixes


def build_plan(snapshot: Snapshot, *, set_globals: bool = False, sql_mode: str = "") -> Plan:
    """Return the fixes that bring the database to utf8mb4/InnoDB and one collation (and the globals, if asked).

    1. The database default, so tables created later are utf8mb4 in the same collation too.
    2. Tables, parents before children: engine first (InnoDB's key limits are what utf8mb4
       needs), then the character set and collation (`snapshot.target_collation`, for the table
       and each text column: mixed collations make comparisons across them fail, MySQL error
       1267). A table that cannot be converted safely is skipped.
    3. Foreign keys the models declare but the tables lack (MyISAM dropped them), once both
       tables are InnoDB and no row points at nothing.
    4. With `set_globals`, the recommended server variables that differ.
    """
    fixes: list[Fix] = []
    skipped: list[Skip] = []
    target = snapshot.target_collation
    if snapshot.charset != TARGET_CHARSET or snapshot.collation != target:
        fixes.append(
            Fix(
                "database",
                snapshot.database,
                f"the database defaults to {snapshot.collation} ({snapshot.charset}), not {target}: tables created "
                "later (new migrations) would be too",
                (f"ALTER DATABASE {quote(snapshot.database)} CHARACTER SET {TARGET_CHARSET} COLLATE {target}",),
            )
        )
    innodb_after: set[str] = set()
    for table in parents_first(snapshot):
        if _plan_table(table, snapshot, fixes, skipped):
            innodb_after.add(table.name)
    _plan_foreign_keys(snapshot, innodb_after, fixes, skipped)
    notes: list[str] = []
    global_fixes, global_skips = plan_globals(snapshot, sql_mode=sql_mode)
    if set_globals:
        fixes.extend(global_fixes)
        skipped.extend(global_skips)
        if global_fixes:
            notes.append(
                "SET GLOBAL lasts until the server restarts: put the same values in my.cnf under [mysqld] too."
            )
    elif global_fixes or global_skips:
        names = ", ".join(item.target for item in [*global_fixes, *global_skips])
        notes.append(f"Recommended server variables differ ({names}): run with --set-globals to change them.")
    return Plan(tuple(fixes), tuple(skipped), tuple(notes))


def _plan_table(table: Table, snapshot: Snapshot, fixes: list[Fix], skipped: list[Skip]) -> bool:
    """Add the table's fixes; return True if it is (or will be) InnoDB."""
    if table.engine != "InnoDB":
        blockers = engine_blockers(table, snapshot)
        if blockers:
            skipped.append(Skip(table.name, f"not moved to InnoDB: {'; '.join(blockers)}."))
            if table.needs_charset_conversion:
                skipped.append(Skip(table.name, "not converted to utf8mb4 either: move it to InnoDB first."))
            return False
        fixes.append(
            Fix(
                "engine",
                table.name,
                f"{table.engine} has no transactions, row locks or foreign keys: a failed request leaves half "
                "its writes behind",
                (f"ALTER TABLE {quote(table.name)} ENGINE=InnoDB",),
                table.rows,
            )
        )
    target = snapshot.target_collation
    convert = (
        f"ALTER TABLE {quote(table.name)} CONVERT TO CHARACTER SET {TARGET_CHARSET} COLLATE {target}",
        *_json_columns_restored(table),
    )
    if table.needs_charset_conversion:
        blockers = charset_blockers(table, snapshot)
        if blockers:
            skipped.append(Skip(table.name, f"not converted to utf8mb4: {'; '.join(blockers)}."))
        else:
            fixes.append(
                Fix(
                    "charset",
                    table.name,
                    f"{_charsets(table)} cannot store every character (emoji, much of CJK): such text fails "
                    "or turns into '?'; its existing text is re-encoded unchanged",
                    convert,
                    table.rows,
                )
            )
    elif table.collation_differs(target):
        fixes.append(
            Fix(
                "collation",
                table.name,
                f"{_collations(table, target)} differ(s) from the database's {target}: comparing text across "
                "tables fails (MySQL error 1267) and sorting and unique keys disagree; the text is unchanged "
                "(if two values of a unique key become equal under the new collation, the statement fails "
                "and changes nothing)",
                convert,
                table.rows,
            )
        )
    return True


def _plan_foreign_keys(snapshot: Snapshot, innodb: set[str], fixes: list[Fix], skipped: list[Skip]) -> None:
    for missing in snapshot.missing_foreign_keys:
        if missing.table not in innodb or missing.parent not in innodb:
            skipped.append(
                Skip(missing.table, f"foreign key {missing.description} not added: both tables must be InnoDB.")
            )
        elif missing.orphans:
            skipped.append(
                Skip(
                    missing.table,
                    f"foreign key {missing.description} not added: {missing.orphans} row(s) point at rows that do "
                    "not exist; delete or repair them first.",
                )
            )
        else:
            fixes.append(Fix("foreign_key", missing.table, f"the model declares {missing.description}", (missing.sql,)))


def plan_globals(snapshot: Snapshot, *, sql_mode: str) -> tuple[list[Fix], list[Skip]]:
    """Return the recommended global variables that differ: as fixes, or as skips with the reason."""
    current = snapshot.global_variables
    wanted: list[tuple[str, str, str]] = []  # (variable, value as SQL, why)
    if int(current.get("innodb_buffer_pool_size", BUFFER_POOL_BYTES)) < BUFFER_POOL_BYTES:
        wanted.append(
            ("innodb_buffer_pool_size", str(BUFFER_POOL_BYTES), "InnoDB caches rows and indexes there; 256M at least")
        )
    if int(current.get("max_connections", MAX_CONNECTIONS)) < MAX_CONNECTIONS:
        wanted.append(("max_connections", str(MAX_CONNECTIONS), "every web and worker process holds connections"))
    for name in ("wait_timeout", "interactive_timeout"):
        if int(current.get(name, TIMEOUT_SECONDS)) != TIMEOUT_SECONDS:
            wanted.append((name, str(TIMEOUT_SECONDS), "idle connections survive the app's own CONN_MAX_AGE"))
    modes = {mode.strip().upper() for mode in current.get("sql_mode", "STRICT_TRANS_TABLES").split(",")}
    if sql_mode and not modes & STRICT_MODES:
        wanted.append(("sql_mode", f"'{sql_mode}'", "strict mode turns silent truncation into errors"))
    fixes, skips = [], []
    for name, value, why in wanted:
        sql = f"SET GLOBAL {name} = {value}"
        reason = f"{name} is {current.get(name)!s}; {why}"
        if not snapshot.can_set_globals:
            skips.append(
                Skip(
                    name,
                    f"{reason}. Not changed: SET GLOBAL needs the SUPER privilege (MySQL 8: "
                    f"SYSTEM_VARIABLES_ADMIN), which {snapshot.account or 'this account'} lacks. Ask a DBA to run: "
                    f"{sql}",
                )
            )
        elif name == "innodb_buffer_pool_size" and not snapshot.buffer_pool_dynamic:
            skips.append(Skip(name, f"{reason}. Not dynamic on {snapshot.server}: set it in my.cnf and restart."))
        else:
            fixes.append(Fix("global", name, reason, (sql,)))
    return fixes, skips


def parents_first(snapshot: Snapshot) -> list[Table]:
    """Return the tables with every referenced table before the tables referencing it."""
    by_name = {table.name: table for table in snapshot.tables}
    graph = {name: set() for name in by_name}
    for table in snapshot.tables:
        graph[table.name].update(parent for parent in table.references if parent in by_name and parent != table.name)
    for missing in snapshot.missing_foreign_keys:
        if missing.table in graph and missing.parent in by_name and missing.parent != missing.table:
            graph[missing.table].add(missing.parent)
    try:
        order = list(
            TopologicalSorter({name: sorted(parents) for name, parents in sorted(graph.items())}).static_order()
        )
    except CycleError:
        order = sorted(graph)  # a cycle cannot be ordered; each statement is atomic either way
    return [by_name[name] for name in order]


def _json_columns_restored(table: Table) -> tuple[str, ...]:
    """Return the statement that gives MariaDB JSON columns back their utf8mb4_bin (CONVERT TO changes them too)."""
    if not table.json_columns:
        return ()
    columns = ", ".join(
        f"MODIFY {quote(column.name)} {column.column_type or 'longtext'} CHARACTER SET {TARGET_CHARSET} "
        f"COLLATE {TARGET_CHARSET}_bin {'NULL' if column.nullable else 'NOT NULL'} "
        f"CHECK (json_valid({quote(column.name)}))"
        for column in table.json_columns
    )
    return (f"ALTER TABLE {quote(table.name)} {columns}",)


def _collations(table: Table, target: str) -> str:
    found = [f"table {table.collation}"] if table.collation != target else []
    found += [f"{column.name} {column.collation}" for column in table.columns_collated_otherwise(target)]
    return ", ".join(found)


def _charsets(table: Table) -> str:
    found = {table.charset} | {column.charset for column in table.columns if column.charset}
    return "/".join(sorted(found - {TARGET_CHARSET})) or table.charset
