"""Child processes of the harness: started in their own session, bounded in time, always stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.config import ROOT

RESULT_PREFIX = "BENCH_RESULT "


class StepFailed(RuntimeError):
    """A child step exited non-zero, timed out, or printed no result."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 15) -> str:
    """Return the last `lines` lines of a child's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Children:
    """Every process the harness started, so it can stop them all on the way out."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._seq = 0

    def spawn(self, args: Sequence[str], *, env: dict[str, str], name: str) -> subprocess.Popen:
        """Start `args` in a new session (its own process group) with output to a log file."""
        self._seq += 1
        log = self.log_dir / f"{self._seq:03d}-{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                list(args), cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._procs.append((proc, log))
        return proc

    def log_of(self, proc: subprocess.Popen) -> Path:
        """Return the log file of a child started by `spawn`."""
        return next(log for p, log in self._procs if p is proc)

    def wait(self, procs: Sequence[subprocess.Popen], timeout: float) -> bool:
        """Wait for all `procs` to exit within `timeout` seconds; return False on time-out."""
        deadline = time.monotonic() + timeout
        for proc in procs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                return False
        return True

    def run(self, args: Sequence[str], *, env: dict[str, str], name: str, timeout: float) -> dict:
        """Run a child to completion and return the JSON it printed after RESULT_PREFIX ({} if none)."""
        return self.result(self.spawn(args, env=env, name=name), name=name, timeout=timeout)

    def result(self, proc: subprocess.Popen, *, name: str, timeout: float) -> dict:
        """Wait for a spawned child to finish and return the JSON it printed after RESULT_PREFIX ({} if none)."""
        log = self.log_of(proc)
        if not self.wait([proc], timeout):
            self.stop(proc)
            raise StepFailed(f"{name} timed out after {timeout:.0f}s; log {log}:\n{log_tail(log)}")
        if proc.returncode != 0:
            raise StepFailed(f"{name} exited {proc.returncode}; log {log}:\n{log_tail(log)}")
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        return {}

    def run_workers(self, args: Sequence[str], *, env: dict[str, str], count: int, name: str, timeout: float) -> None:
        """Start `count` copies of a worker that exits when its queue is empty; wait for all of them.

        Raises StepFailed when they do not all exit 0 within `timeout` (stragglers are stopped).
        """
        procs = [self.spawn(args, env=env, name=f"{name}{i}") for i in range(count)]
        finished = self.wait(procs, timeout)
        for proc in procs:
            self.stop(proc)
        if not finished:
            raise StepFailed(f"{count} {name} process(es) did not drain the queue within {timeout:.0f}s")
        failed = [(self.log_of(p).name, p.returncode) for p in procs if p.returncode]
        if failed:
            raise StepFailed(f"{name} exited non-zero: {failed}; log tail:\n{log_tail(self.log_of(procs[0]))}")

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if still alive after `grace` seconds."""
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        """Stop every child still running."""
        for proc, _ in self._procs:
            self.stop(proc, grace=5.0)


def workers_label(count: int) -> str:
    """Return "1 worker" / "2 workers", the drain labels every system shares."""
    return f"{count} worker" + ("s" if count != 1 else "")


def python(*args: str) -> list[str]:
    """Return a command line running this interpreter."""
    return [sys.executable, *args]


def emit_result(payload: dict) -> None:
    """Print a child's result where `Children.run` finds it."""
    print(RESULT_PREFIX + json.dumps(payload), flush=True)
