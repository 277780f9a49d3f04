"""SIGTERM/SIGINT for the worker: turn them into a shutdown request that wakes its wait at once."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Protocol

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class StopSignals:
    """Install handlers that call `on_stop(signal name)`; `wait()` returns early when one arrives."""

    def __init__(self) -> None:
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous: dict[int, object] = {}
        self._previous_wakeup_fd = -1

    def install(self, on_stop: Callable[[str], None]) -> None:
        def handler(signum: int, frame: object) -> None:
            # Only set a flag: the worker's loop logs and acts on it (logging here could deadlock).
            on_stop(signal.Signals(signum).name)

        self._wakeup = socket.socketpair()
        for end in self._wakeup:
            end.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wakeup[1].fileno())
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, handler)

    def restore(self) -> None:
        if self._wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        for end in self._wakeup:
            end.close()
        self._wakeup = None

    def wait(self, pipes: Sequence[Connection | HasFileno], timeout: float) -> None:
        """Wait until a pipe (or other source with a `fileno()`) has something to read, a signal arrives, or `timeout` passes."""
        sources: list = [*pipes, self._wakeup[0]] if self._wakeup else list(pipes)
        if not sources:
            time.sleep(timeout)
            return
        if self._wakeup is not None and self._wakeup[0] in wait(sources, timeout):
            try:
                self._wakeup[0].recv(4096)
            except BlockingIOError:
                pass
