"""The `transaction_reset` shortcut: forget abandoned atomic blocks by hand, keeping the connection.

A request (or task) that entered `transaction.atomic()` and never left it leaves Django's
connection wrapper believing it is still inside those blocks. Django's public way out is to close
the connection and open a new one (`core.db.session`, the plain version): `connect()` resets the
wrapper's transaction state. This shortcut rolls back on the same connection instead and resets
that state itself, saving a reconnect and the new connection's session check.

It writes attributes Django keeps for itself (`BaseDatabaseWrapper.__init__` and `connect()` in
django/db/backends/base/base.py): a Django release that adds or renames one would leave the
wrapper half reset. `diagnostics/tests/test_db_session.py` compares the result with the state of
a freshly connected wrapper, on SQLite and on MariaDB, so such a release fails the tests.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper


def rollback_and_forget_atomic_blocks(connection: BaseDatabaseWrapper) -> None:
    """Roll back on the server, forget the abandoned atomic blocks and restore autocommit.

    Raises DatabaseError (with the blocks already forgotten, so the connection can be closed)
    when the server cannot roll back.
    """
    try:
        with connection.wrap_database_errors:
            connection.connection.rollback()
    finally:
        forget_atomic_blocks(connection)
    if not connection.get_autocommit():
        connection.set_autocommit(True)


def forget_atomic_blocks(connection: BaseDatabaseWrapper) -> None:
    """Set the wrapper's transaction state to what `connect()` leaves: outside any atomic block."""
    connection.in_atomic_block = False
    connection.atomic_blocks = []
    connection.savepoint_ids = []
    connection.needs_rollback = False
    connection.commit_on_exit = True
    connection.closed_in_transaction = False
    connection.run_on_commit = []
