"""The worker's book of held tasks: plain bookkeeping in memory, no database (no django_db mark here)."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.models import TaskQueue
from tasks.outcomes import Outcome, OutcomeKind
from tasks.worker import held as held_module
from tasks.worker.held import HeldTasks
from tasks.worker.messages import DJANGO_KIND, TaskSpec

QUEUE, SLOW_QUEUE = 1, 2
TIMEOUT, SLOW_TIMEOUT = 60, 600


def claimed(pk: int, queue_id: int = QUEUE) -> TaskQueue:
    """Return a task as a claim hands it over (never saved: the book does not care)."""
    return TaskQueue(pk=pk, queue_id=queue_id, task_type="echo", payload={"n": pk}, attempts=1)


@pytest.fixture
def held() -> HeldTasks:
    book = HeldTasks()
    book.set_timeouts({QUEUE: TIMEOUT, SLOW_QUEUE: SLOW_TIMEOUT})
    book.add_claimed([claimed(1), claimed(2), claimed(3, SLOW_QUEUE)], now=100.0)
    return book


def test_claimed_tasks_wait_in_line_leased_for_their_queues_timeout(held):
    assert (list(held), held.ready(), held.active()) == ([1, 2, 3], [1, 2, 3], 3)
    assert (held.timeout_of(1), held.timeout_of(3)) == (TIMEOUT, SLOW_TIMEOUT)
    assert held.spec(3) == TaskSpec(3, "echo", {"n": 3}, 1, False)
    assert [spec.task_id for spec in held.take_ready(2)] == [1, 2]
    assert held.ready() == [3]


def test_tasks_a_child_never_started_go_back_to_the_front_in_order_unless_let_go(held):
    held.take_ready(3)
    held.drop(2)
    held.requeue_front([1, 2, 3])
    assert held.ready() == [1, 3]


# The worker stops a handler a margin before its lease ends: a tenth of the lease, at most 1 s.
MARGIN = min(1.0, TIMEOUT / 10)


def test_a_running_task_must_stop_at_its_timeout_or_a_margin_before_its_lease_end_whichever_first(held):
    assert held.deadline_of(1, started=110.0) == 100.0 + TIMEOUT - MARGIN  # the lease ends first
    assert held.deadline_of(1, started=90.0) == 90.0 + TIMEOUT
    held.drop(1)
    assert held.deadline_of(1, started=110.0) is None
    assert held.lease_expired(1, now=0.0)
    stop_by = 100.0 + TIMEOUT - MARGIN
    assert not held.lease_expired(2, now=stop_by - 0.01) and held.lease_expired(2, now=stop_by)


def test_the_margin_is_a_tenth_of_a_short_lease_and_a_second_of_a_long_one():
    assert (held_module.lease_margin(3), held_module.lease_margin(60), held_module.lease_margin(600)) == (0.3, 1.0, 1.0)


def test_tasks_in_line_past_their_lease_are_named_for_letting_go(held):
    assert held.ready_past_lease(100.0 + TIMEOUT - MARGIN) == [1, 2]
    assert held.ready_past_lease(100.0 + TIMEOUT - MARGIN - 0.01) == []


def test_a_child_stops_itself_half_the_margin_before_the_first_of_its_leases_ends(held):
    assert held.child_stops_by([3, 1]) == 100.0 + TIMEOUT - MARGIN / 2  # the slow queue's lease is longer
    assert held.child_stops_by([3]) == 100.0 + SLOW_TIMEOUT - 1.0 / 2
    assert held.child_stops_by([]) == math.inf
    held.drop(1)
    assert held.child_stops_by([1]) == math.inf, "a task let go is the parent's to stop"
    held.leases_renewed(still_held={2, 3}, cancel_requested=set(), at=130.0)
    assert held.child_stops_by([2]) == 130.0 + TIMEOUT - MARGIN / 2


def test_outcomes_wait_for_the_batch_and_are_forgotten_once_recorded(held):
    held.add_outcome(Outcome(1, OutcomeKind.SUCCEEDED, result="ok"))
    held.add_outcome(Outcome(99, OutcomeKind.SUCCEEDED))  # not held: ignored
    assert (held.outcomes_waiting(), held.active()) == (1, 2)
    batch = held.to_record()
    assert [(task.pk, outcome.result) for task, outcome in batch] == [(1, "ok")]
    held.forget_recorded(batch)
    assert (list(held), held.outcomes_waiting(), held.processed()) == ([2, 3], 0, 1)


def test_only_tasks_without_an_outcome_are_marked_for_hand_back(held):
    held.take_ready(3)
    held.add_outcome(Outcome(1, OutcomeKind.SUCCEEDED))
    held.release_all_unfinished()
    assert [task.pk for task in held.to_hand_back()] == [2, 3]
    assert held.active() == 0
    held.handed_back(held.to_hand_back())
    assert (list(held), held.ready(), held.to_hand_back()) == ([1], [], [])


def test_stopping_marks_every_task_in_line_for_hand_back_and_empties_the_line(held):
    held.take_ready(1)
    held.release_waiting()
    assert (held.ready(), sorted(task.pk for task in held.to_hand_back())) == ([], [2, 3])


def test_a_lost_lease_lets_the_task_go_and_a_cancel_is_reported_once(held):
    held.add_outcome(Outcome(2, OutcomeKind.SUCCEEDED))
    tasks, leases = held.lease_renewal()
    assert ([task.pk for task in tasks], leases) == ([1, 2, 3], {QUEUE: TIMEOUT, SLOW_QUEUE: SLOW_TIMEOUT})

    # 1 kept and asked to cancel, 2 lost but its outcome is kept for recording, 3 lost.
    assert held.leases_renewed(still_held={1}, cancel_requested={1}, at=130.0) == [1]
    assert (list(held), held.has_outcome(2)) == ([1, 2], True)
    assert held.spec(1).cancel_requested is True
    assert held.deadline_of(1, started=130.0) == 130.0 + TIMEOUT - MARGIN
    assert held.leases_renewed(still_held={1, 2}, cancel_requested={1}, at=140.0) == []


def test_leases_are_renewed_half_way_or_at_a_heartbeat_and_never_when_nothing_is_held(held):
    assert not held.renewal_due(100.0 + TIMEOUT / 2 - 1, heartbeat=False)
    assert held.renewal_due(100.0 + TIMEOUT / 2, heartbeat=False)
    assert held.renewal_due(100.0, heartbeat=True)
    for task_id in list(held):
        held.drop(task_id)
    assert not held.renewal_due(math.inf, heartbeat=True)
    assert held.next_due(0.0, flush_delay=0.05) == math.inf


def test_progress_is_kept_for_held_tasks_and_written_at_most_once_a_second(held):
    held.add_progress(1, 10, "a tenth")
    held.add_progress(99, 50, "not ours")
    assert held.progress_due(100.0) == {1: (10, "a tenth")}
    held.progress_written(100.0)
    held.add_progress(1, 20, "a fifth")
    assert held.progress_due(100.0 + held_module.PROGRESS_WRITE_INTERVAL / 2) == {}
    assert held.next_due(100.0, flush_delay=0.05) == 100.0 + held_module.PROGRESS_WRITE_INTERVAL
    assert held.progress_due(100.0 + held_module.PROGRESS_WRITE_INTERVAL) == {1: (20, "a fifth")}


def test_the_last_progress_of_finishing_tasks_is_taken_out_and_put_back_if_unwritten(held):
    held.add_progress(1, 90, "almost")
    held.add_outcome(Outcome(1, OutcomeKind.SUCCEEDED))
    last = held.take_last_progress(held.to_record())
    assert (last, held.progress_due(math.inf)) == ({1: (90, "almost")}, {})
    held.put_back_progress(last)
    assert held.progress_due(math.inf) == {1: (90, "almost")}


def test_the_next_database_moment_is_the_earliest_thing_owed(held, monkeypatch):
    assert held.next_due(100.0, flush_delay=0.05) == 100.0 + TIMEOUT / 2  # the first renewal
    held.release_later([2])
    assert held.next_due(120.0, flush_delay=0.05) == 120.0  # a hand-back is due at once
    held.handed_back([])
    monkeypatch.setattr(held_module, "time", SimpleNamespace(monotonic=lambda: 110.0))
    held.add_outcome(Outcome(1, OutcomeKind.SUCCEEDED))
    assert (held.outcomes_waiting_since(), held.next_due(110.0, flush_delay=0.05)) == (110.0, 110.05)


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Return the modules imported at run time and those imported only for type hints."""
    typing_only: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only |= {name for child in node.body for name in _names(child)}
    everything = {name for node in ast.walk(tree) for name in _names(node)}
    return everything - typing_only, typing_only


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def test_the_book_imports_nothing_that_reaches_the_database():
    runtime, typing_only = _imports(ast.parse(Path(held_module.__file__).read_text()))
    assert not [name for name in runtime if name.startswith(("django", "tasks.models", "tasks.transitions"))]
    assert typing_only <= {"tasks.models.TaskQueue"}, "the model is named in type hints, never queried"


def test_a_renewed_lease_is_renewed_again_half_way_through_even_an_odd_one():
    book = HeldTasks()
    book.set_timeouts({QUEUE: 7})
    book.add_claimed([claimed(1)], now=100.0)
    assert not book.renewal_due(100.0 + 3.49, heartbeat=False)
    assert book.renewal_due(100.0 + 3.5, heartbeat=False)
    book.leases_renewed(still_held={1}, cancel_requested=set(), at=130.0)
    assert not book.renewal_due(130.0 + 3.49, heartbeat=False)
    assert book.renewal_due(130.0 + 3.5, heartbeat=False)
    assert book.lease_expired(1, now=130.0 + 7 + 1), "long past its end"


def test_a_django_task_goes_to_its_child_with_the_details_its_result_shows():
    book = HeldTasks()
    book.set_timeouts({QUEUE: TIMEOUT})
    book.set_queue_names({QUEUE: "default"})
    task = TaskQueue(
        pk=5, queue_id=QUEUE, kind=DJANGO_KIND, task_type="app.tasks.f", payload={}, attempts=1, priority=3
    )
    book.add_claimed([task], now=100.0)
    spec = book.spec(5)
    assert (spec.kind, spec.details["queue"], spec.details["priority"]) == (DJANGO_KIND, "default", 3)
    assert book.spec(5) != TaskSpec(5, "app.tasks.f", {}, 1, False)


def test_tasks_marked_for_hand_back_are_not_active():
    book = HeldTasks()
    book.set_timeouts({QUEUE: TIMEOUT})
    book.add_claimed([claimed(pk) for pk in (1, 2, 3, 4)], now=100.0)
    book.release_later([1])
    assert book.active() == 3


def test_past_due_is_past_due_not_only_at_the_instant(held):
    stop_by = 100.0 + TIMEOUT - MARGIN
    assert held.ready_past_lease(stop_by + 5) == [1, 2]
    assert held.renewal_due(100.0 + TIMEOUT / 2 + 5, heartbeat=False)


def test_progress_is_written_at_most_once_a_second(held):
    held.add_progress(1, 10, "a tenth")
    assert held.progress_due(10.0) == {1: (10, "a tenth")}
    held.progress_written(10.0)
    held.add_progress(1, 20, "a fifth")
    assert held.progress_due(10.99) == {}
    assert held.progress_due(11.0) == {1: (20, "a fifth")}
