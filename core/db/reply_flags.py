"""The `reply_flags` shortcut: the server's status flags that came with its last reply, read without a round trip.

Every OK and EOF packet of the MySQL protocol carries the session's status flags, among them
`SERVER_STATUS_IN_TRANS` (the session is inside a transaction) and `SERVER_STATUS_AUTOCOMMIT`.
MariaDB Connector/C (`libmariadb`, which mysqlclient is built against on Debian and on most
distributions) keeps them and hands them out through its public `mariadb_get_info()`; mysqlclient
gives the connection's `MYSQL *` as a capsule. Reading them costs about a microsecond where
`SELECT @@in_transaction` costs a round trip.

The flags are those of the last reply that carried them: an error reply carries none, so after a
failed statement they may still say "in a transaction" when the server has rolled it back. They
are therefore trusted only when they say the session is clean; anything else is confirmed on the
server by the caller. Against MySQL's own client library (no `mariadb_get_info`) this module
answers None and callers ask the server.

It reaches into mysqlclient's connection capsule and Connector/C's `MYSQL` struct through ctypes;
the plain version (`core.db.session._server_says_in_transaction`) asks the server every time.
diagnostics/tests/test_server_status.py checks the flags against the server's own answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from typing import Any

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
# `enum mariadb_value` in MariaDB Connector/C's mysql.h (stable since Connector/C 3.0).
MARIADB_CONNECTION_SERVER_STATUS = 30
_CAPSULE_NAME = b"_mysql.connection.native_connection"


def status_flags(raw_connection: Any) -> int | None:
    """Return the status flags of the server's last reply on a mysqlclient connection, or None.

    None means they cannot be read here (another client library or driver): ask the server.
    """
    native = getattr(raw_connection, "_get_native_connection", None)
    if native is None:  # not mysqlclient (which, once connected, has loaded its client library)
        return None
    reader = _reader()
    if reader is None:
        return None
    try:
        flags = reader(native())
        # mysqlclient reads the autocommit bit from the same struct: if the two disagree, this is
        # not the struct mysqlclient uses, and nothing read from it is trusted.
        if flags is None or bool(flags & SERVER_STATUS_AUTOCOMMIT) != bool(raw_connection.get_autocommit()):
            return None
    except Exception:  # a closed connection (mysqlclient raises its own, unwrapped errors): ask the server
        return None
    return flags


def is_clean(raw_connection: Any) -> bool:
    """Return True when the last reply said: autocommit on, no transaction open.

    False means "not known to be clean" (flags unreadable, or stale after an error): confirm on
    the server before acting on it.
    """
    flags = status_flags(raw_connection)
    if flags is None:
        return False
    return not flags & SERVER_STATUS_IN_TRANS and bool(flags & SERVER_STATUS_AUTOCOMMIT)


@functools.cache
def _reader() -> Callable[[Any], int | None] | None:
    """Bind `mariadb_get_info` once; None when the client library does not have it.

    Only a libmariadb already loaded into the process (by mysqlclient) is used: another copy
    would be handed a struct it does not know.
    """
    name = ctypes.util.find_library("mariadb")
    if name is None:
        return None
    try:
        get_info = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY).mariadb_get_info
    except (OSError, AttributeError):
        return None
    get_info.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    get_info.restype = ctypes.c_char
    capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule_pointer.restype = ctypes.c_void_p

    def read(capsule: Any) -> int | None:
        try:
            handle = capsule_pointer(capsule, _CAPSULE_NAME)
        except ValueError:  # a capsule of another name: not the MYSQL struct we expect
            return None
        flags = ctypes.c_uint()
        if get_info(handle, MARIADB_CONNECTION_SERVER_STATUS, ctypes.byref(flags)) != b"\x00":
            return None
        return flags.value

    return read
