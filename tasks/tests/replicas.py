"""A stand-in read replica for tests: a real second database holding a snapshot of the test database.

SQLite: a second file, written with SQLite's backup API. MySQL/MariaDB: a second database on the
same server, every table copied. The snapshot does not follow later writes, so a test sees at
once which database answered a read: data written after `take()` is only on the primary.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections

from core.db.replica import REPLICA, ROUTER


class SnapshotReplica:
    """A second database under the `replica` alias, refreshed from the primary by `take()`."""

    def __init__(self) -> None:
        primary = connections[DEFAULT_DB_ALIAS].settings_dict
        self.vendor = connection.vendor
        if self.vendor == "sqlite":
            self.name = str(Path(primary["NAME"]).with_name("test_taskhub_replica.sqlite3"))
        else:
            self.name = f"{primary['NAME']}_replica"
        self.settings_dict: dict[str, Any] = {**primary, "NAME": self.name, "TEST": {"MIRROR": None, "NAME": self.name}}

    def take(self) -> None:
        """Make the replica an exact copy of the primary's committed data, now."""
        if REPLICA in connections.settings:
            connections[REPLICA].close()
        if self.vendor == "sqlite":
            self._copy_sqlite()
        else:
            self._copy_mysql()

    def drop(self) -> None:
        if self.vendor == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(self.name + suffix).unlink(missing_ok=True)
        else:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")

    def _copy_sqlite(self) -> None:
        connection.ensure_connection()
        self.drop()
        target = sqlite3.connect(self.name)
        try:
            connection.connection.backup(target)
        finally:
            target.close()

    def _copy_mysql(self) -> None:
        source = connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            cursor.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
            for table in connection.introspection.table_names(cursor):
                cursor.execute(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                    "AND EXTRA NOT LIKE %s ORDER BY ORDINAL_POSITION",
                    [source, table, "%GENERATED%"],
                )
                columns = ", ".join(f"`{name}`" for (name,) in cursor.fetchall())
                cursor.execute(f"CREATE TABLE `{self.name}`.`{table}` LIKE `{source}`.`{table}`")
                cursor.execute(
                    f"INSERT INTO `{self.name}`.`{table}` ({columns}) SELECT {columns} FROM `{source}`.`{table}`"
                )


def install(replica: SnapshotReplica) -> None:
    """Add the `replica` alias, pointing at `replica` (before the test database set-up of a test that uses it)."""
    connections.settings[REPLICA] = replica.settings_dict  # the same dict as settings.DATABASES


def uninstall() -> None:
    connections[REPLICA].close()
    del connections[REPLICA]
    del connections.settings[REPLICA]


def route_reads(settings: Any) -> None:
    """Turn the router on (`settings`: pytest-django's fixture) with no user starting from a recent write."""
    settings.DATABASE_ROUTERS = [ROUTER]
    cache.clear()
