"""The worker's child processes, driven directly: fed from the book, reporting over their pipes.

The handlers used here (echo, sleep, test.hang) touch no database, so neither do these tests.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from django.db import connections

from tasks.models import TaskQueue
from tasks.outcomes import OutcomeKind
from tasks.registry import UnknownTaskType
from tasks.worker import child as child_module
from tasks.worker.child import LeaseWatchdog, _detach_from_parent, _Runner
from tasks.worker.children import ChildProcess, Pool
from tasks.worker.held import HeldTasks
from tasks.worker.messages import Done, TaskSpec, parse_done

pytestmark = pytest.mark.timeout(60)

QUEUE = 1


def book(*tasks: tuple[int, str, dict]) -> HeldTasks:
    """Return a book holding the given (id, task type, payload) tasks, in line in that order."""
    held = HeldTasks()
    held.set_timeouts({QUEUE: 60})
    claimed = [
        TaskQueue(pk=pk, queue_id=QUEUE, task_type=kind, payload=payload, attempts=1) for pk, kind, payload in tasks
    ]
    held.add_claimed(claimed, now=time.monotonic())
    return held


def wait_for_done(pool: Pool, count: int, *, timeout: float = 20) -> dict[int, Done]:
    """Collect the children's reports until `count` tasks are done; return them by task id."""
    done: dict[int, Done] = {}
    deadline = time.monotonic() + timeout
    while len(done) < count:
        assert time.monotonic() < deadline, f"only {sorted(done)} done"
        for child in pool:
            for message in child.receive():
                if message[0] == "done":
                    report = parse_done(message)
                    done[report.outcome.task_id] = report
        time.sleep(0.01)
    return done


@pytest.fixture
def start_pool() -> Iterator[Callable[[int], Pool]]:
    """Start pools of children; every child left is killed at teardown."""
    started: list[Pool] = []

    def start(size: int) -> Pool:
        started.append(Pool(worker_id="host:1:aaaaaa", size=size))
        started[-1].fill()
        return started[-1]

    yield start
    for pool in started:
        for child in pool:
            pool.kill(child)


@pytest.fixture
def pool(start_pool) -> Pool:
    return start_pool(2)


def test_tasks_in_line_are_spread_over_the_least_loaded_children_up_to_their_depth(pool):
    held = book(*((pk, "echo", {"n": pk}) for pk in range(1, 6)))
    pool.dispatch(held, 2, time.monotonic())
    assert sorted(child.unfinished() for child in pool) == [[1, 2], [3, 4]]
    assert held.ready() == [5]

    done = wait_for_done(pool, 4)
    assert {pk: (d.outcome.kind, d.outcome.result) for pk, d in done.items()} == {
        pk: (OutcomeKind.SUCCEEDED, {"n": pk}) for pk in range(1, 5)
    }
    assert all(d.started <= d.finished for d in done.values())
    assert [child.unfinished() for child in pool] == [[], []]


def test_a_batch_is_spread_evenly_over_idle_children_and_busy_ones_are_topped_up_to_their_depth_only(start_pool):
    pool = start_pool(3)
    pool.dispatch(book(*((pk, "test.hang", {}) for pk in range(1, 7))), 5, time.monotonic())
    assert sorted(child.unfinished() for child in pool) == [[1, 2], [3, 4], [5, 6]]

    held = book(*((pk, "test.hang", {}) for pk in range(7, 11)))
    pool.dispatch(held, 3, time.monotonic())
    assert sorted(child.unfinished() for child in pool) == [[1, 2, 7], [3, 4, 8], [5, 6, 9]]
    assert held.ready() == [10]


def test_no_task_goes_to_a_child_that_is_stopping_or_whose_pipe_is_gone(start_pool):
    pool = start_pool(3)
    stopping, gone, serving = pool
    stopping.stopping, gone.dead = True, True
    pool.dispatch(book((1, "echo", {}), (2, "echo", {})), 5, time.monotonic())
    assert [child.unfinished() for child in pool] == [[], [], [1, 2]]
    assert pool.pipes() == [stopping.conn, serving.conn]


def test_a_child_whose_pipe_failed_counts_as_exited_while_its_process_still_runs(start_pool):
    child = next(iter(start_pool(1)))
    child.dead = True
    assert child.process.is_alive() and child.has_exited()


def test_a_child_s_task_is_timed_from_when_it_was_sent_to_the_idle_child(start_pool):
    pool = start_pool(2)
    first, second = pool
    second.outstanding.append(99)  # sent earlier, not begun yet as far as the parent knows
    pool.dispatch(book((1, "test.hang", {}), (2, "test.hang", {})), 2, 100.0)
    assert (first.unfinished(), second.unfinished()) == ([1], [99, 2])
    assert list(pool.running()) == [(first, 1, 100.0)]

    pool.dispatch(book((3, "test.hang", {})), 2, 200.0)
    assert first.unfinished() == [1, 3]
    assert list(pool.running()) == [(first, 1, 100.0)]


def test_each_child_is_told_when_to_stop_itself_as_its_leases_are_renewed_and_let_go(start_pool):
    pool = start_pool(2)
    first, second = pool
    held = book((1, "test.hang", {}))
    pool.dispatch(held, 1, time.monotonic())
    pool.publish_deadlines(held)
    assert (first.stop_by.value, second.stop_by.value) == (held.child_stops_by([1]), math.inf)

    for at in (time.monotonic() + 10, time.monotonic() - 10):  # renewed: a later end, then an earlier one
        held.leases_renewed(still_held={1}, cancel_requested=set(), at=at)
        pool.publish_deadlines(held)
        assert first.stop_by.value == held.child_stops_by([1]) == at + 60 - 0.5

    held.drop(1)
    pool.publish_deadlines(held)
    assert first.stop_by.value == math.inf


def test_a_cancel_passed_on_stops_a_queued_task_before_it_starts(start_pool):
    pool = start_pool(1)
    held = book((1, "sleep", {"seconds": 0.5}), (2, "echo", {}))
    pool.dispatch(held, 2, time.monotonic())
    pool.pass_on_cancels([2])

    done = wait_for_done(pool, 2)
    assert done[1].outcome.kind is OutcomeKind.SUCCEEDED
    assert (done[2].outcome.kind, done[2].outcome.error) == (OutcomeKind.CANCELLED, "cancelled before it started")


def test_a_child_ignores_stop_signals_and_exits_cleanly_when_its_parent_says_stop(start_pool):
    pool = start_pool(1)
    pool.dispatch(book((1, "echo", {})), 1, time.monotonic())
    wait_for_done(pool, 1)  # serving: past the moment it starts ignoring signals
    child = next(iter(pool))
    os.kill(child.pid, signal.SIGTERM)  # as systemd does, to the whole process group
    time.sleep(0.2)
    assert not child.has_exited()

    pool.stop()
    child.process.join(10)
    assert child.has_exited() and child.stopped_cleanly()


def test_a_killed_child_is_forgotten_and_its_unfinished_tasks_are_known(pool):
    held = book((1, "test.hang", {}), (2, "echo", {}), (3, "echo", {}))
    pool.dispatch(held, 2, time.monotonic())
    child = next(c for c in pool if c.unfinished()[:1] == [1])
    assert child.is_running(1) and child.was_running()

    pool.kill(child)
    assert (child.has_exited(), child.stopped_cleanly(), child.unfinished()) == (True, False, [1, 2])
    assert child.exitcode == -signal.SIGKILL
    assert len(pool) == 1
    pool.fill()
    assert len(pool) == 2


def test_a_message_to_a_child_that_died_marks_it_dead_instead_of_raising(start_pool):
    pool = start_pool(1)
    child = next(iter(pool))
    child.process.kill()
    child.process.join(10)

    child.send(("stop",))
    assert child.dead


def test_a_task_reported_done_out_of_turn_is_the_one_struck_off_the_child_s_list(start_pool):
    pool = start_pool(1)
    child = next(iter(pool))
    own = child.conn
    child.conn, child_end = multiprocessing.Pipe()  # the reports come from this test, not the child
    own.close()  # the child reads end of file and leaves
    child.outstanding.extend([1, 2, 3])

    child_end.send(("done", 3, OutcomeKind.SUCCEEDED.value, None, "", 10.0, 11.0, "", None))
    child.receive()
    assert child.unfinished() == [1, 2]
    child_end.send(("done", 1, OutcomeKind.SUCCEEDED.value, None, "", 10.0, 12.0, "", None))
    child.receive()
    assert (child.unfinished(), child.current_started) == ([2], 12.0)


def test_a_child_whose_lease_deadline_passes_ends_itself_while_its_handler_hangs(start_pool):
    pool = start_pool(1)
    pool.dispatch(book((1, "test.hang", {})), 1, time.monotonic())
    child = next(iter(pool))
    time.sleep(0.2)  # the watchdog has read "no deadline" by now
    child.stop_by.value = time.monotonic() + 0.3  # what `publish_deadlines` writes

    child.process.join(10)
    assert child.exitcode == -signal.SIGALRM


def test_the_lease_watchdog_arms_the_timer_for_each_new_deadline_and_only_then(monkeypatch):
    armed: list[tuple[int, float]] = []
    timer = SimpleNamespace(
        ITIMER_REAL=signal.ITIMER_REAL, setitimer=lambda which, seconds: armed.append((which, seconds))
    )
    monkeypatch.setattr(child_module, "signal", timer)
    watchdog = LeaseWatchdog(ctypes.c_double(math.inf))
    now = time.monotonic()
    for stop_by in (math.inf, now + 30, now + 30, now + 60, now + 10, now - 5, math.inf):
        watchdog.arm(stop_by)

    assert {which for which, _ in armed} == {signal.ITIMER_REAL}
    seconds = [seconds for _, seconds in armed]
    assert len(seconds) == 5, seconds  # no deadline at first, and the same one twice, need no re-arming
    assert 29 < seconds[0] <= 30 and 59 < seconds[1] <= 60 and 9 < seconds[2] <= 10
    assert seconds[3:] == [0.001, 0]  # past: at once; no lease left: disarmed


PR_GET_PDEATHSIG = 2


class _Stop(Exception):
    pass


def test_the_lease_watchdog_reads_the_published_deadline_every_50_ms(monkeypatch):
    stop_by = ctypes.c_double(math.inf)
    armed: list[float] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise _Stop
        stop_by.value = 130.0  # the parent publishes a deadline

    monkeypatch.setattr(child_module, "time", SimpleNamespace(monotonic=lambda: 100.0, sleep=sleep))
    timer = SimpleNamespace(ITIMER_REAL=signal.ITIMER_REAL, setitimer=lambda which, seconds: armed.append(seconds))
    monkeypatch.setattr(child_module, "signal", timer)
    with pytest.raises(_Stop):
        LeaseWatchdog(stop_by).run()
    assert slept == [0.05, 0.05, 0.05]
    assert armed == [30.0]


def _detach_and_report(parent_pid: int, inherited: list) -> None:
    """In a forked process: detach as a child does; exit 7 if it then dies with its parent and set aside
    the parent's database connection, else 8.
    """
    wrapper = connections["default"]
    inherited_socket = wrapper.connection = object()  # stands for a socket the parent's session uses
    _detach_from_parent(parent_pid, inherited)
    death_signal = ctypes.c_int()
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(death_signal))
    detached = wrapper.connection is None and inherited_socket in child_module._inherited
    os._exit(7 if detached and death_signal.value == signal.SIGKILL else 8)


def test_a_child_dies_with_its_parent_and_exits_at_once_if_its_parent_is_already_gone():
    fork = multiprocessing.get_context("fork")
    # Another pid than its parent's: the parent died and init (1) or a subreaper took the child.
    for parent_pid, exitcode in ((os.getpid(), 7), (1, 0), (os.getpid() + 1, 0)):
        process = fork.Process(target=_detach_and_report, args=(parent_pid, []))
        process.start()
        process.join(10)
        assert process.exitcode == exitcode, parent_pid


def open_files(pid: int) -> set[str]:
    """Return what the process's file descriptors point at ("socket:[inode]", paths...)."""
    files = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            files.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return files


def _detach_without_prctl(error: type[Exception]) -> None:
    """In a forked process: detach where the C library has no prctl (not Linux) or cannot be loaded; exit 7."""

    def cdll(*args, **kwargs):
        raise error("no prctl here")

    child_module.ctypes = SimpleNamespace(CDLL=cdll)
    _detach_from_parent(os.getppid(), [])
    os._exit(7)


@pytest.mark.parametrize("error", [AttributeError, OSError])
def test_a_child_detaches_where_it_cannot_ask_to_die_with_its_parent(error):
    process = multiprocessing.get_context("fork").Process(target=_detach_without_prctl, args=(error,))
    process.start()
    process.join(10)
    assert process.exitcode == 7


def test_a_child_closes_its_copies_of_its_siblings_pipes(start_pool):
    pool = start_pool(2)
    pool.dispatch(book((1, "echo", {}), (2, "echo", {})), 1, time.monotonic())
    wait_for_done(pool, 2)  # both serving: past closing what they inherited
    first, second = pool
    first_pipe = f"socket:[{os.fstat(first.conn.fileno()).st_ino}]"

    assert first_pipe not in open_files(second.pid)


def test_a_child_closes_its_copy_of_its_parent_s_end_and_leaves_when_the_parent_s_is_closed():
    child = ChildProcess(worker_id="host:1:aaaaaa", siblings=[])
    try:
        child.conn.close()  # what the parent's going away does to its end
        child.process.join(10)
        assert child.exitcode == 0
        assert not child.stopped_cleanly()  # nobody asked it to stop
    finally:
        child.kill()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_a_handler_asking_for_cancellation_reads_the_pipe_every_50_ms_at_most(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(child_module, "time", clock)
    parent_end, child_end = multiprocessing.Pipe()
    runner = _Runner(child_end, "host:1:aaaaaa")

    parent_end.send(("cancel", [1]))
    assert runner.is_cancelled(1)
    parent_end.send(("cancel", [2]))
    clock.now = 100.04
    assert not runner.is_cancelled(2)  # not read yet
    clock.now = 100.0 + 0.05
    assert runner.is_cancelled(2)


def test_a_handler_s_error_is_retryable_and_an_unknown_task_type_is_permanent():
    runner = _Runner(multiprocessing.Pipe()[1], "host:1:aaaaaa")
    failed = runner._execute(TaskSpec(1, "fail", {"message": "no luck"}, 1, False))
    assert (failed.kind, failed.error.splitlines()[0]) == (OutcomeKind.RETRYABLE, "TaskFailure: no luck")
    assert failed.exception == "tasks.handlers.TaskFailure"
    unknown = runner._execute(TaskSpec(2, "no.such.type", {}, 1, False))
    assert (unknown.kind, unknown.error) == (OutcomeKind.PERMANENT, str(UnknownTaskType("no.such.type")))


@pytest.mark.parametrize("closed", ["parent's end", "child's end"])
def test_a_child_whose_pipe_is_gone_stops_serving_without_an_error(closed):
    parent_end, child_end = multiprocessing.Pipe()
    runner = _Runner(child_end, "host:1:aaaaaa")
    (parent_end if closed == "parent's end" else child_end).close()  # EOFError, or OSError, on the next read
    runner.serve()  # returns


def test_a_child_that_finds_its_pipe_gone_between_tasks_runs_none_of_those_in_line():
    parent_end, child_end = multiprocessing.Pipe()
    runner = _Runner(child_end, "host:1:aaaaaa")
    runner.queue.append(TaskSpec(1, "echo", {}, 1, False))
    parent_end.close()
    runner.serve()
    assert list(runner.queue) == [TaskSpec(1, "echo", {}, 1, False)]


class _RefusingPipe:
    """A child's end of the pipe that refuses the first message, as it does one that cannot be pickled."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, message: tuple) -> None:
        if not self.sent:
            self.sent.append(("refused", message))
            raise TypeError("cannot pickle 'generator' object")
        self.sent.append(message)


def test_a_report_that_cannot_be_sent_is_replaced_by_a_permanent_failure_saying_why():
    pipe = _RefusingPipe()
    _Runner(pipe, "host:1:aaaaaa")._run(TaskSpec(1, "echo", {"n": 1}, 1, False))
    (_, refused), report = pipe.sent
    assert refused[:5] == ("done", 1, OutcomeKind.SUCCEEDED.value, {"n": 1}, "")
    assert report[:5] == (
        "done",
        1,
        OutcomeKind.PERMANENT.value,
        None,
        "the handler's result could not be passed on: cannot pickle 'generator' object",
    )
    assert report[5] == refused[5] <= report[6]  # started, finished


def test_a_task_claimed_with_a_cancel_request_is_reported_cancelled_without_running():
    parent_end, child_end = multiprocessing.Pipe()
    runner = _Runner(child_end, "host:1:aaaaaa")
    runner._run(TaskSpec(1, "echo", {}, 1, True))
    done = parse_done(parent_end.recv())
    assert (done.outcome.kind, done.outcome.error) == (OutcomeKind.CANCELLED, "cancelled before it started")
    assert runner.cancelled == set()


def test_only_the_task_a_child_is_on_counts_as_running_not_those_in_line_behind_it(start_pool):
    (child,) = start_pool(1)
    first = 1000 + len(child.unfinished())  # ids computed here, as the database's are: not shared int objects
    pool = Pool(worker_id="host:1:aaaaaa", size=1)
    pool.children = [child]
    pool.dispatch(book((first, "test.hang", {}), (first + 1, "test.hang", {})), 5, time.monotonic())
    assert child.unfinished() == [first, first + 1]
    assert child.is_running(int(str(first)))
    assert not child.is_running(first + 1)
    assert not child.is_running(first - 1)


def _fake_child(*outstanding: int) -> SimpleNamespace:
    sent: list[tuple] = []
    return SimpleNamespace(
        dead=False, stopping=False, outstanding=deque(outstanding), current_started=None, send=sent.append, sent=sent
    )


def test_a_pool_has_an_idle_child_only_while_one_has_nothing_in_line():
    pool = Pool(worker_id="host:1:aaaaaa", size=2)
    pool.children = [_fake_child(1), _fake_child()]
    assert pool.has_idle_child() and pool.busy()
    pool.children = [_fake_child(1), _fake_child(2)]
    assert not pool.has_idle_child()


def test_a_child_whose_line_is_full_is_sent_nothing_not_even_an_empty_batch():
    pool = Pool(worker_id="host:1:aaaaaa", size=2)
    pool.children = [_fake_child(1, 2), _fake_child(3, 4)]
    held = book((5, "echo", {}))
    pool.dispatch(held, 2, time.monotonic())
    assert [child.sent for child in pool.children] == [[], []]
    assert held.ready() == [5]


def _unstarted_child() -> ChildProcess:
    """A ChildProcess without a process or a pipe of its own, for its bookkeeping alone."""
    child = ChildProcess.__new__(ChildProcess)
    child.outstanding, child.current_started, child.dead, child.stopping = deque(), None, False, False
    return child


def test_a_task_reported_done_out_of_turn_is_struck_off_whatever_the_order_of_the_ids():
    # Claims go by priority, then run_at: a child's line need not be in id order.
    child = _unstarted_child()
    child.outstanding.extend([5, 3, 9])
    child._task_done(3, finished=12.5)
    assert (list(child.outstanding), child.current_started) == ([5, 9], 12.5)
    child._task_done(5, finished=13.0)
    assert (list(child.outstanding), child.current_started) == ([9], 13.0)


def test_a_child_whose_pipe_ends_while_reading_is_dead():
    child = _unstarted_child()

    def ended() -> tuple:
        raise EOFError

    child.conn = SimpleNamespace(poll=lambda: True, recv=ended)
    assert child.receive() == []
    assert child.dead


@pytest.mark.parametrize(
    ("stopping", "exitcode", "clean"), [(True, 0, True), (True, 1, False), (True, -9, False), (False, 0, False)]
)
def test_only_a_child_told_to_stop_that_exits_with_0_stopped_cleanly(stopping, exitcode, clean):
    child = _unstarted_child()
    child.stopping, child.process = stopping, SimpleNamespace(exitcode=exitcode)
    assert child.stopped_cleanly() is clean


def test_a_busy_child_is_topped_up_to_its_depth_and_no_further():
    pool = Pool(worker_id="host:1:aaaaaa", size=2)
    busy, idle = _fake_child(1), _fake_child()
    pool.children = [busy, idle]
    held = book(*((pk, "echo", {}) for pk in range(2, 7)))
    pool.dispatch(held, 2, time.monotonic())
    assert (list(idle.outstanding), list(busy.outstanding)) == ([2, 3], [1, 4])  # 2 places, then 1 place left
    assert held.ready() == [5, 6]
