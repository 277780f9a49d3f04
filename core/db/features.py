"""What the database server must be able to do for workers: SELECT ... FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper


class UnsupportedDatabase(Exception):
    """The database cannot give workers SKIP LOCKED claims."""


def skip_locked_problem(*, vendor: str, is_mariadb: bool = False, version: tuple[int, ...] = ()) -> str | None:
    """Return why this server cannot run workers (no SKIP LOCKED), or None if it can."""
    if vendor != "mysql":
        return None
    name, minimum = ("MariaDB", (10, 6)) if is_mariadb else ("MySQL", (8, 0, 1))
    if tuple(version[: len(minimum)]) >= minimum:
        return None
    have = ".".join(map(str, version)) or "unknown"
    need = ".".join(map(str, minimum))
    return (
        f"{name} {have} has no SELECT ... FOR UPDATE SKIP LOCKED, which workers need to claim tasks "
        f"without blocking each other; upgrade to {name} {need} or later."
    )


def ensure_skip_locked(connection: BaseDatabaseWrapper) -> None:
    """Raise UnsupportedDatabase when `connection`'s server cannot run workers."""
    if connection.vendor != "mysql":
        return
    problem = skip_locked_problem(
        vendor="mysql", is_mariadb=connection.mysql_is_mariadb, version=tuple(connection.mysql_version)
    )
    if problem:
        raise UnsupportedDatabase(problem)
