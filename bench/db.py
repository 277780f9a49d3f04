"""Direct MariaDB access for the harness: bench_* databases, counts and timestamps."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import MySQLdb

from bench.config import BenchConfig

_BENCH_DB = re.compile(r"^bench_[a-z0-9_]{1,56}$")


def check_bench_name(name: str) -> str:
    """Return `name` if it is a database the harness may create and drop (bench_*), else raise."""
    if not _BENCH_DB.match(name):
        raise ValueError(f"refusing to touch database {name!r}: the harness only owns bench_* databases")
    return name


@contextmanager
def connect(cfg: BenchConfig, database: str | None = None, *, autocommit: bool = True) -> Iterator[Any]:
    """Yield a mysqlclient connection (READ COMMITTED, utf8mb4), closed afterwards."""
    conn = MySQLdb.connect(
        host=cfg.mysql_host,
        port=cfg.mysql_port,
        user=cfg.mysql_user,
        passwd=cfg.mysql_password,
        db=database or "",
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=10,
    )
    try:
        conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        yield conn
    finally:
        conn.close()


def query(cfg: BenchConfig, database: str | None, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement and return its rows."""
    with connect(cfg, database) as conn:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def execute_all(cfg: BenchConfig, database: str | None, statements: Sequence[str]) -> None:
    """Run statements in order on one connection."""
    with connect(cfg, database) as conn:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)


def database_exists(cfg: BenchConfig, name: str) -> bool:
    """Return whether database `name` exists."""
    rows = query(cfg, None, "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [name])
    return bool(rows)


def recreate_database(cfg: BenchConfig, name: str) -> None:
    """Drop (if present) and create the bench database `name`, utf8mb4."""
    check_bench_name(name)
    execute_all(
        cfg,
        None,
        [
            f"DROP DATABASE IF EXISTS `{name}`",
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        ],
    )


def drop_database(cfg: BenchConfig, name: str) -> None:
    """Drop the bench database `name` if it exists."""
    check_bench_name(name)
    execute_all(cfg, None, [f"DROP DATABASE IF EXISTS `{name}`"])


def truncate(cfg: BenchConfig, database: str, tables: Sequence[str]) -> None:
    """Empty `tables` (foreign keys off for this session only)."""
    check_bench_name(database)
    statements = ["SET SESSION foreign_key_checks = 0"]
    statements += [f"TRUNCATE TABLE `{table}`" for table in tables]
    statements.append("SET SESSION foreign_key_checks = 1")
    execute_all(cfg, database, statements)


def server_version(cfg: BenchConfig) -> str:
    """Return the MariaDB/MySQL server version."""
    return query(cfg, None, "SELECT VERSION()")[0][0]


def span(cfg: BenchConfig, database: str, table: str, where: str = "1=1", params: Sequence[Any] = ()) -> dict:
    """Return the finished count and first start → last finish of rows matching `where`, from DB timestamps."""
    rows = query(
        cfg,
        database,
        f"SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM `{table}` WHERE finished_at IS NOT NULL AND {where}",
        params,
    )
    count, first, last = rows[0]
    seconds = (last - first).total_seconds() if first is not None and last is not None else None
    return {"finished": int(count), "seconds": seconds}


def status_counts(cfg: BenchConfig, database: str, table: str, where: str = "1=1", params: Sequence[Any] = ()) -> dict:
    """Return {status: count} of rows matching `where`."""
    rows = query(cfg, database, f"SELECT status, COUNT(*) FROM `{table}` WHERE {where} GROUP BY status", params)
    return {status: int(count) for status, count in rows}
