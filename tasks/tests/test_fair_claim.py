"""The claim of queues with fairness, per-key concurrency and rate limits, one call at a time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.tests.both_ways import both_ways
from tasks import fair_claim, transitions
from tasks.models import FAIR_WEIGHT_MAX, OwnerQueueSettings, QueueConfig, QueueRateBucket, TaskQueue, TaskStatus
from tasks.outcomes import Outcome, OutcomeKind
from tasks.tests.conftest import enqueue_many

raw_task_sql = both_ways("raw_task_sql")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("raw_task_sql")]

ME = "host:1:aaaaaa"


@pytest.fixture(autouse=True)
def fresh_round_robin(monkeypatch):
    """Every test's round-robin starts at the first owner (a worker's starts at random)."""
    monkeypatch.setattr(fair_claim, "_random_start", lambda queue_id: 0)
    fair_claim._cursor.clear()
    yield
    fair_claim._cursor.clear()


def claim(queue: QueueConfig, limit: int, *, now=None) -> transitions.Claim:
    return transitions.claim(worker_id=ME, queues=[queue], limit=limit, now=now)


def finish(tasks) -> None:
    transitions.record_outcomes(
        [(task, Outcome(task.pk, OutcomeKind.SUCCEEDED)) for task in tasks], worker_id=ME, queues={}
    )


def owners(django_user_model, n: int):
    return [django_user_model.objects.create_user(f"owner{i:03d}", password="x") for i in range(n)]


# --- Fairness between owners ---------------------------------------------------------------------


def test_a_fair_claim_takes_the_owners_in_turn_whatever_their_backlog(alice, bob, staff):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    enqueue_many(alice, 200, queue=queue)
    enqueue_many(bob, 2, queue=queue)
    enqueue_many(staff, 1, queue=queue)
    tasks = claim(queue, 6).tasks
    by_owner = [task.owner_id for task in tasks]
    assert sorted(by_owner) == sorted([alice.pk, alice.pk, alice.pk, bob.pk, bob.pk, staff.pk])
    assert by_owner[:3] == [alice.pk, bob.pk, staff.pk], "every owner's first, then every owner's second"


def test_without_fairness_the_big_backlog_goes_first(alice, bob):
    queue = QueueConfig.objects.create(name="unfair")
    enqueue_many(alice, 50, queue=queue)
    enqueue_many(bob, 2, queue=queue)
    assert {task.owner_id for task in claim(queue, 10).tasks} == {alice.pk}


def test_within_one_owner_it_is_priority_then_run_at_then_id(alice, bob):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    now = timezone.now()
    late = enqueue_many(alice, queue=queue, run_at=now - timedelta(minutes=1))[0]
    urgent = enqueue_many(alice, queue=queue, priority=9, run_at=now - timedelta(seconds=5))[0]
    early = enqueue_many(alice, queue=queue, run_at=now - timedelta(minutes=5))[0]
    enqueue_many(bob, 3, queue=queue, run_at=now - timedelta(minutes=9))
    alices = [task.pk for task in claim(queue, 6, now=now).tasks if task.owner_id == alice.pk]
    assert alices == [urgent.pk, early.pk, late.pk]


def test_the_round_robin_serves_every_owner_before_any_twice(django_user_model):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    people = owners(django_user_model, 25)
    for person in people:
        enqueue_many(person, 3, queue=queue)
    served: list[int] = []
    for _ in range(5):  # 5 claims of 5: each of the 25 owners once
        served += [task.owner_id for task in claim(queue, 5).tasks]
    assert sorted(served) == sorted(person.pk for person in people)
    again = [task.owner_id for task in claim(queue, 5).tasks]
    assert again == sorted(again) and len(set(again)) == 5, "the next round starts over from the first owners"


def test_a_batch_takes_at_most_owners_per_batch_owners_and_every_owner_has_a_turn_within_the_bound(
    django_user_model,
):
    """With N owners each owner gets a turn within ceil(N / OWNERS_PER_BATCH) of a worker's batches."""
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    people = owners(django_user_model, 3 * fair_claim.OWNERS_PER_BATCH + 6)
    for person in people:
        enqueue_many(person, 10, queue=queue)
    batch = 2 * fair_claim.OWNERS_PER_BATCH + 4  # the last owners' shares are cut by the batch's end
    rounds = -(-len(people) // fair_claim.OWNERS_PER_BATCH)
    batches = [[task.owner_id for task in claim(queue, batch).tasks] for _ in range(rounds)]
    assert all(len(found) == batch for found in batches)
    assert all(len(set(found)) == fair_claim.OWNERS_PER_BATCH for found in batches), "several tasks each, few owners"
    assert {owner for found in batches for owner in found} == {person.pk for person in people}
    firsts = [set(found) for found in batches[:3]]
    assert len(set.union(*firsts)) == 3 * fair_claim.OWNERS_PER_BATCH, "no owner's turn comes twice in a round"


def test_a_workers_round_robin_starts_at_a_random_owner(django_user_model, monkeypatch):
    monkeypatch.undo()
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    people = owners(django_user_model, 30)
    for person in people:
        enqueue_many(person, 1, queue=queue)
    firsts = set()
    for _ in range(8):
        fair_claim._cursor.clear()
        firsts.add(fair_claim.plan(queue, timezone.now(), 1).candidates.popitem()[1].owner_id)
    assert len(firsts) > 1, "eight workers starting together would not all begin with the same owner"


def test_a_fair_claim_skips_future_tasks_and_other_queues(alice, bob, default_queue):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    enqueue_many(alice, 3, queue=queue, run_at=timezone.now() + timedelta(hours=1))
    enqueue_many(bob, 3, queue=default_queue)
    due = enqueue_many(bob, 2, queue=queue)
    result = claim(queue, 10)
    assert sorted(task.pk for task in result.tasks) == sorted(task.pk for task in due)
    stored = TaskQueue.objects.filter(pk__in=[task.pk for task in due])
    assert {(task.status, task.claimed_by, task.attempts) for task in stored} == {(TaskStatus.RUNNING, ME, 1)}


def test_a_fair_claim_passes_over_a_task_taken_since_its_read(alice, bob):
    """The lock by primary key re-checks the state: a task claimed meanwhile is not claimed twice."""
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    enqueue_many(alice, 2, queue=queue)
    enqueue_many(bob, 2, queue=queue)
    plan = fair_claim.plan(queue, timezone.now(), 4)
    assert len(plan.ids) == 4
    taken = transitions.claim(worker_id="host:2:bbbbbb", queues=[queue], limit=2).tasks
    relocked = transitions._lock_chosen(plan.ids, timezone.now())
    assert {task.pk for task in relocked} == set(plan.ids) - {task.pk for task in taken}


def weigh(user, weight: int) -> None:
    OwnerQueueSettings.objects.update_or_create(user=user, defaults={"fair_weight": weight})


def test_a_weight_3_owner_gets_three_times_the_starts_of_a_weight_1_owner(alice, bob):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    weigh(alice, 3)
    enqueue_many(alice, 100, queue=queue)
    enqueue_many(bob, 100, queue=queue)
    served = [task.owner_id for _ in range(10) for task in claim(queue, 4).tasks]
    assert len(served) == 40
    assert (served.count(alice.pk), served.count(bob.pk)) == (30, 10)
    assert claim(queue, 8).tasks[0].owner_id in (alice.pk, bob.pk)


def test_weights_take_turns_within_a_batch_and_never_starve_anyone(alice, bob, staff):
    queue = QueueConfig.objects.create(name="fair", fairness="owner")
    weigh(alice, FAIR_WEIGHT_MAX)
    weigh(bob, 2)
    enqueue_many(alice, 300, queue=queue)
    enqueue_many(bob, 50, queue=queue)
    enqueue_many(staff, 50, queue=queue)
    batches = [[task.owner_id for task in claim(queue, 10).tasks] for _ in range(6)]
    assert all(len(batch) == 10 for batch in batches)
    for window in zip(batches, batches[1:], batches[2:], strict=False):
        started = {owner for batch in window for owner in batch}
        assert started == {alice.pk, bob.pk, staff.pk}, "every owner starts within one batch per other owner"
    started = [owner for batch in batches for owner in batch]
    # alice's turn, then bob's and staff's together (their shares fit one batch), and so on.
    assert [set(batch) for batch in batches] == [{alice.pk}, {bob.pk, staff.pk}] * 3
    assert started.count(alice.pk) == 30, "the heavy owner gets a whole batch to itself in each of its turns"


# --- Per-key concurrency ---------------------------------------------------------------------------


def test_at_most_per_key_concurrency_tasks_of_a_key_run_at_once(alice):
    queue = QueueConfig.objects.create(name="keyed", per_key_concurrency=2)
    enqueue_many(alice, 5, queue=queue, concurrency_key="acct-1")
    enqueue_many(alice, 5, queue=queue, concurrency_key="acct-2")
    enqueue_many(alice, 2, queue=queue)
    first = claim(queue, 20)
    keys = [task.pk for task in first.tasks]
    running = TaskQueue.objects.filter(pk__in=keys)
    assert sorted(t.concurrency_key or "-" for t in running) == ["-", "-", "acct-1", "acct-1", "acct-2", "acct-2"]
    second = claim(queue, 20)
    assert second.tasks == [] and second.held_back, "over the limit: held back, not 'nothing runnable'"
    assert queue.pk not in second.empty_queues
    finish([task for task in first.tasks if TaskQueue.objects.get(pk=task.pk).concurrency_key == "acct-1"])
    third = claim(queue, 20).tasks
    assert [TaskQueue.objects.get(pk=task.pk).concurrency_key for task in third] == ["acct-1", "acct-1"]


def test_tasks_over_their_keys_limit_never_block_other_keys_behind_them(alice):
    queue = QueueConfig.objects.create(name="keyed", per_key_concurrency=1)
    now = timezone.now()
    enqueue_many(alice, 100, queue=queue, concurrency_key="busy", run_at=now - timedelta(minutes=5))
    other = enqueue_many(alice, 1, queue=queue, concurrency_key="quiet", run_at=now)[0]
    first = claim(queue, 3, now=now).tasks
    assert {TaskQueue.objects.get(pk=t.pk).concurrency_key for t in first} == {"busy", "quiet"}
    assert other.pk in {t.pk for t in first}


def test_per_key_limits_and_fairness_together(alice, bob):
    queue = QueueConfig.objects.create(name="both", fairness="owner", per_key_concurrency=1)
    enqueue_many(alice, 10, queue=queue, concurrency_key="shared")
    enqueue_many(bob, 10, queue=queue, concurrency_key="shared")
    enqueue_many(bob, 1, queue=queue, concurrency_key="own")
    taken = claim(queue, 10).tasks
    assert sorted(TaskQueue.objects.get(pk=t.pk).concurrency_key for t in taken) == ["own", "shared"]


# --- Rate limits -----------------------------------------------------------------------------------


def test_a_claim_never_takes_more_than_the_bucket_holds(alice):
    queue = QueueConfig.objects.create(name="rated", rate_limit="10/s")  # bucket of 2
    enqueue_many(alice, 30, queue=queue)
    t0 = timezone.now()
    first = claim(queue, 20, now=t0)
    assert len(first.tasks) == 2
    assert first.held_back and first.retry_in == pytest.approx(0.1)
    assert claim(queue, 20, now=t0 + timedelta(milliseconds=50)).tasks == []
    assert len(claim(queue, 20, now=t0 + timedelta(milliseconds=150)).tasks) == 1
    # After an idle spell the burst is the bucket's size, not the time's worth.
    assert len(claim(queue, 20, now=t0 + timedelta(hours=1)).tasks) == 2
    bucket = QueueRateBucket.objects.get(queue=queue)
    assert bucket.key == "" and bucket.throttled == 4


def test_the_rate_counts_starts_across_workers(alice):
    """One bucket in the database: a second worker's claim draws from the same tokens."""
    queue = QueueConfig.objects.create(name="rated", rate_limit="60/m")  # 1 a second, bucket of 1
    enqueue_many(alice, 5, queue=queue)
    t0 = timezone.now()
    assert len(transitions.claim(worker_id="host:1:a", queues=[queue], limit=5, now=t0).tasks) == 1
    assert transitions.claim(worker_id="host:2:b", queues=[queue], limit=5, now=t0).tasks == []
    later = t0 + timedelta(seconds=1)
    assert len(transitions.claim(worker_id="host:2:b", queues=[queue], limit=5, now=later).tasks) == 1


def test_a_rate_limit_per_key_gives_each_key_its_own_bucket(alice):
    queue = QueueConfig.objects.create(name="rated", rate_limit="5/s", rate_limit_per_key=True)  # bucket of 1
    for key in ("a", "b", "c"):
        enqueue_many(alice, 3, queue=queue, concurrency_key=key)
    enqueue_many(alice, 3, queue=queue)
    t0 = timezone.now()
    taken = claim(queue, 20, now=t0).tasks
    keys = sorted(TaskQueue.objects.get(pk=t.pk).concurrency_key or "-" for t in taken)
    assert keys == ["-", "a", "b", "c"]
    assert QueueRateBucket.objects.filter(queue=queue).count() == 4


def test_a_changed_queue_setting_applies_to_the_next_claim(alice):
    """The limited queues' settings are read from their locked rows: a worker's copy may be old."""
    queue = QueueConfig.objects.create(name="rated", rate_limit="1/h")
    enqueue_many(alice, 10, queue=queue)
    stale = QueueConfig.objects.get(pk=queue.pk)
    t0 = timezone.now()
    assert len(claim(stale, 10, now=t0).tasks) == 1
    assert claim(stale, 10, now=t0 + timedelta(seconds=1)).tasks == []
    QueueConfig.objects.filter(pk=queue.pk).update(rate_limit="100/s")  # bucket of 20
    assert len(claim(stale, 10, now=t0 + timedelta(seconds=2)).tasks) == 9
