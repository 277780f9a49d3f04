"""The parent's side of the worker's child processes: start them, feed them, watch them, replace them.

The parent claims, records and keeps leases; a child only runs handlers (`child.py`), so a
handler that hangs, leaks or crashes costs one child, which the parent kills and replaces.
What they say to each other is in `messages.py`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from django.db import connections

from tasks.worker.child import child_main

if TYPE_CHECKING:
    from tasks.worker.held import HeldTasks

logger = logging.getLogger("taskhub.worker")

# Fork, not spawn: a child starts at once with the parent's loaded Django and handler registry.
_fork = multiprocessing.get_context("fork")


class ChildProcess:
    """One child: its pipe and the tasks sent to it that it has not reported done, oldest first."""

    def __init__(self, *, worker_id: str, siblings: list[ChildProcess]) -> None:
        parent_end, child_end = _fork.Pipe(duplex=True)
        # The parent's ends the fork copies into the child, which closes them: its siblings' pipes,
        # and its own, so that the parent going away ends the child's reads (end of file).
        inherited = [sibling.conn for sibling in siblings] + [parent_end]
        # When the child must stop itself (monotonic, shared memory): the end of the leases of the
        # tasks sent to it, as the parent last renewed them. The child needs no live parent for it.
        self.stop_by = _fork.RawValue("d", math.inf)
        self.process = _fork.Process(
            target=child_main, args=(child_end, worker_id, os.getpid(), inherited, self.stop_by), daemon=True
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.outstanding: deque[int] = deque()
        # When the oldest outstanding task began (monotonic); None while the child is idle.
        self.current_started: float | None = None
        self.stopping = False
        self.dead = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def unfinished(self) -> list[int]:
        """Return the tasks sent to this child that it has not reported done, oldest first."""
        return list(self.outstanding)

    def is_running(self, task_id: int) -> bool:
        """Return True if `task_id` is the task this child is on (its oldest not reported done)."""
        return bool(self.outstanding) and self.outstanding[0] == task_id

    def was_running(self) -> bool:
        """Return True if the child had begun its oldest outstanding task."""
        return self.current_started is not None

    def stopped_cleanly(self) -> bool:
        """Return True if the child exited because it was asked to stop."""
        return self.stopping and self.exitcode == 0

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:  # it died; collect() notices
            self.dead = True

    def receive(self) -> list[tuple]:
        """Return every message waiting in the pipe, noting when a "done" ends a task."""
        messages = []
        try:
            # Read on after death too: what it wrote before it died is still in the pipe.
            while self.conn.poll():
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            self.dead = True
        for message in messages:
            if message[0] == "done":
                self._task_done(message[1], finished=message[6])
        return messages

    def _task_done(self, task_id: int, *, finished: float) -> None:
        # The child runs tasks in the order sent, so the next one began when this one ended.
        if self.outstanding and self.outstanding[0] == task_id:
            self.outstanding.popleft()
        elif task_id in self.outstanding:
            self.outstanding.remove(task_id)
        self.current_started = finished if self.outstanding else None

    def has_exited(self) -> bool:
        return self.dead or not self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.dead = True

    def close(self) -> None:
        self.process.join(1)
        self.conn.close()


class Pool:
    """The worker's children, kept at `size` while the worker runs."""

    def __init__(self, *, worker_id: str, size: int) -> None:
        self.worker_id = worker_id
        self.size = size
        self.children: list[ChildProcess] = []

    def __iter__(self) -> Iterator[ChildProcess]:
        return iter(list(self.children))

    def __len__(self) -> int:
        return len(self.children)

    def fill(self) -> None:
        """Start children until there are `size` of them."""
        while len(self.children) < self.size:
            # A forked child must not share this process's database sockets.
            connections.close_all()
            self.children.append(ChildProcess(worker_id=self.worker_id, siblings=self.children))

    def pipes(self) -> list[Connection]:
        return [child.conn for child in self.children if not child.dead]

    def busy(self) -> bool:
        return any(child.outstanding for child in self.children)

    def has_idle_child(self) -> bool:
        return any(not child.outstanding for child in self.children)

    def running(self) -> Iterator[tuple[ChildProcess, int, float]]:
        """Yield (child, task id, started) for each task a child is running now."""
        for child in list(self.children):
            if child.outstanding and child.current_started is not None:
                yield child, child.outstanding[0], child.current_started

    def dispatch(self, held: HeldTasks, depth: int, now: float) -> None:
        """Send tasks waiting in `held` to the least loaded children, each up to `depth` queued, in one message."""
        waiting = held.ready_count()
        if not waiting:
            return
        children = sorted((c for c in self.children if not c.dead and not c.stopping), key=lambda c: len(c.outstanding))
        for index, child in enumerate(children):
            share = -(-waiting // (len(children) - index))  # ceil: spread the batch evenly
            take = min(depth - len(child.outstanding), share)
            if take <= 0:
                continue
            specs = held.take_ready(take)
            waiting -= take
            if not child.outstanding:
                child.current_started = now
            child.outstanding.extend(spec.task_id for spec in specs)
            child.send(("run", specs))

    def publish_deadlines(self, held: HeldTasks) -> None:
        """Tell each child when to stop itself should its leases not be renewed (see `child.py`)."""
        for child in self.children:
            stop_by = held.child_stops_by(child.outstanding)
            if child.stop_by.value != stop_by:
                child.stop_by.value = stop_by

    def pass_on_cancels(self, task_ids: list[int]) -> None:
        """Tell the children holding these tasks that someone asked to cancel them."""
        for child in self.children:
            wanted = [task_id for task_id in task_ids if task_id in child.outstanding]
            if wanted:
                child.send(("cancel", wanted))

    def stop(self) -> None:
        """Ask every child to finish its current task and exit."""
        for child in self.children:
            child.stopping = True
            child.send(("stop",))

    def remove(self, child: ChildProcess) -> list[tuple]:
        """Forget an exited (or killed) child; return the messages it wrote before it went."""
        messages = child.receive()
        self.children.remove(child)
        child.close()
        return messages

    def kill(self, child: ChildProcess) -> list[tuple]:
        """Kill `child` at once; return what it reported before it died."""
        messages = child.receive()
        child.kill()
        return messages + self.remove(child)
