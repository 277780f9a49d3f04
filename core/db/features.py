"""What the database server must be able to do for workers: SELECT ... FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class UnsupportedDatabase(Exception):
    """The database cannot give workers SKIP LOCKED claims."""


@dataclass(frozen=True)
class ServerIdentity:
    """What `SELECT VERSION()` says the server is."""

    product: str  # "MariaDB", "MySQL" or "TiDB"
    version: tuple[int, ...]
    raw: str

    def __str__(self) -> str:
        return f"{self.product} {'.'.join(map(str, self.version)) or 'of unknown version'} ({self.raw})"


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


def identify_server(version_string: str) -> ServerIdentity:
    """Parse a `SELECT VERSION()` answer: "10.11.6-MariaDB-log", "8.0.36", "8.0.11-TiDB-v7.5.0"."""
    raw = version_string.strip()
    lowered = raw.lower()
    # MariaDB behind a MySQL-5-compatible banner reports "5.5.5-10.6.12-MariaDB".
    text = raw[len("5.5.5-") :] if lowered.startswith("5.5.5-") and "mariadb" in lowered else raw
    match = _VERSION.search(text)
    version = tuple(int(part) for part in match.groups() if part is not None) if match else ()
    if "tidb" in lowered:
        product = "TiDB"
    elif "mariadb" in lowered:
        product = "MariaDB"
    else:
        product = "MySQL"
    return ServerIdentity(product=product, version=version, raw=raw)


def identity_problem(identity: ServerIdentity) -> str | None:
    """Return why workers must not claim on this server (TiDB, or no SKIP LOCKED), or None."""
    if identity.product == "TiDB":
        return (
            f"{identity} is TiDB: it accepts SELECT ... FOR UPDATE SKIP LOCKED but does not skip rows another "
            "transaction has locked (pingcap/tidb#69720), so two workers could run the same task; "
            "run TaskHub on MySQL 8.0.1+ or MariaDB 10.6+."
        )
    return skip_locked_problem(vendor="mysql", is_mariadb=identity.product == "MariaDB", version=identity.version)


def read_identity(connection: BaseDatabaseWrapper) -> ServerIdentity:
    """Ask the server behind `connection` what it is (`SELECT VERSION()`: TiDB names itself there)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        (version,) = cursor.fetchone()
    return identify_server(str(version))


def ensure_skip_locked(connection: BaseDatabaseWrapper) -> None:
    """Raise UnsupportedDatabase when `connection`'s server cannot run workers."""
    if connection.vendor != "mysql":
        return
    problem = identity_problem(read_identity(connection))
    if problem:
        raise UnsupportedDatabase(problem)
