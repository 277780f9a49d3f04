"""Unique tasks: one active task per (owner, queue, unique key), enforced by the database."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.db import IntegrityError, transaction

from core.tests.both_ways import both_ways
from tasks import queue_cache, services
from tasks.errors import QuotaExceeded, TaskStateConflict
from tasks.models import QueueConfig, TaskQueue, TaskStatus
from tasks.specs import TaskSpec
from tasks.tests.factories import finished_fields, make_task
from tasks.tests.test_api_concurrency import POSTERS, race

raw_task_sql = both_ways("raw_task_sql")


def enqueue(user, **fields) -> services.EnqueueResult:
    fields.setdefault("task_type", "echo")
    return services.task_enqueue(user=user, **fields)


@pytest.mark.django_db
@pytest.mark.usefixtures("raw_task_sql", "default_queue")
class TestService:
    def test_a_second_enqueue_with_the_key_returns_the_active_task(self, alice):
        first = enqueue(alice, unique_key="sync-42", payload={"n": 1})
        second = enqueue(alice, unique_key="sync-42", payload={"n": 2})
        assert (first.created, first.deduplicated) == (True, False)
        assert (second.created, second.deduplicated, second.task.pk) == (False, True, first.task.pk)
        assert TaskQueue.objects.get().payload == {"n": 1}

    def test_a_running_task_holds_its_key(self, alice):
        first = enqueue(alice, unique_key="k").task
        TaskQueue.objects.filter(pk=first.pk).update(status=TaskStatus.RUNNING)
        assert enqueue(alice, unique_key="k").task.pk == first.pk

    @pytest.mark.parametrize("status", [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED])
    def test_a_finished_task_frees_the_key(self, alice, status):
        first = enqueue(alice, unique_key="k").task
        TaskQueue.objects.filter(pk=first.pk).update(**finished_fields(status))
        again = enqueue(alice, unique_key="k")
        assert again.created and again.task.pk != first.pk
        assert TaskQueue.objects.get(pk=first.pk).active_unique_key is None
        assert TaskQueue.objects.get(pk=again.task.pk).active_unique_key == "k"

    def test_the_key_is_per_owner_and_per_queue(self, alice, bob, emails_queue):
        a = enqueue(alice, unique_key="k").task
        b = enqueue(bob, unique_key="k").task
        c = enqueue(alice, unique_key="k", queue="emails").task
        assert len({a.pk, b.pk, c.pk}) == 3

    def test_replace_updates_a_pending_task_in_place(self, alice):
        first = enqueue(alice, unique_key="k", payload={"v": 1}, priority=0).task
        again = enqueue(alice, unique_key="k", payload={"v": 2}, priority=7, on_conflict="replace")
        assert (again.created, again.deduplicated, again.task.pk) == (False, True, first.pk)
        stored = TaskQueue.objects.get()
        assert (stored.payload, stored.priority, stored.status) == ({"v": 2}, 7, TaskStatus.PENDING)
        assert stored.run_at >= first.run_at

    def test_replace_of_a_running_task_enqueues_a_new_one_that_takes_the_key(self, alice):
        first = enqueue(alice, unique_key="k", payload={"v": 1}).task
        TaskQueue.objects.filter(pk=first.pk).update(status=TaskStatus.RUNNING)
        again = enqueue(alice, unique_key="k", payload={"v": 2}, on_conflict="replace")
        assert again.created and not again.deduplicated and again.task.pk != first.pk
        running = TaskQueue.objects.get(pk=first.pk)
        assert (running.status, running.unique_key, running.payload) == (TaskStatus.RUNNING, None, {"v": 1})
        assert enqueue(alice, unique_key="k").task.pk == again.task.pk

    @pytest.mark.parametrize("bulk", [False, True])
    def test_a_replace_whose_running_holder_finishes_meanwhile_stores_the_new_task(self, alice, monkeypatch, bulk):
        # The enqueue reads the holder running; it finishes before the lock that would supersede
        # it. Nothing is superseded, and the enqueue looks again: a plain insert, the key now free.
        holder = enqueue(alice, unique_key="k", payload={"v": 1}).task
        TaskQueue.objects.filter(pk=holder.pk).update(status=TaskStatus.RUNNING)
        running = TaskQueue.objects.get(pk=holder.pk)
        if bulk:  # its retry rolls back what its transaction saw written: finished before, read stale
            TaskQueue.objects.filter(pk=holder.pk).update(**finished_fields(TaskStatus.SUCCEEDED))
        real_holders, real_supersede = services._active_holders, services.transitions.supersede_and_enqueue
        answers = []

        def read_before_it_finished(*, user, keys):
            if answers:
                return real_holders(user=user, keys=keys)
            if not bulk:  # the worker's outcome commits right after this read
                TaskQueue.objects.filter(pk=holder.pk).update(**finished_fields(TaskStatus.SUCCEEDED))
            return {(running.queue_id, "k"): running}

        def supersede(running, new):
            answers.append(real_supersede(running, new))
            return answers[-1]

        monkeypatch.setattr(services, "_active_holders", read_before_it_finished)
        monkeypatch.setattr(services.transitions, "supersede_and_enqueue", supersede)
        if bulk:
            spec = TaskSpec(task_type="echo", unique_key="k", payload={"v": 2}, on_conflict="replace")
            created = services.tasks_enqueue_bulk(user=alice, specs=[spec]).tasks[0]
        else:
            created = enqueue(alice, unique_key="k", payload={"v": 2}, on_conflict="replace").task
        assert answers == [False]  # it found the holder no longer running
        stored = TaskQueue.objects.get(pk=created.pk)
        assert (stored.status, stored.unique_key, stored.payload) == (TaskStatus.PENDING, "k", {"v": 2})
        finished = TaskQueue.objects.get(pk=holder.pk)
        assert (finished.status, finished.unique_key) == (TaskStatus.SUCCEEDED, "k")  # not touched
        assert TaskQueue.objects.filter(owner=alice).count() == 2

    @pytest.mark.parametrize("bulk", [False, True])
    def test_a_replace_whose_pending_holder_is_claimed_meanwhile_supersedes_it(self, alice, monkeypatch, bulk):
        # The enqueue reads the holder pending; a worker claims it before the lock that would
        # update it in place. Nothing is updated, and the enqueue looks again: the holder now
        # runs on without its key, and a new task takes it.
        holder = enqueue(alice, unique_key="k", payload={"v": 1}).task
        pending = TaskQueue.objects.get(pk=holder.pk)
        if bulk:  # its retry rolls back what its transaction saw written: claimed before, read stale
            TaskQueue.objects.filter(pk=holder.pk).update(status=TaskStatus.RUNNING)
        real_holders = services._active_holders
        reads = []

        def read_before_it_was_claimed(*, user, keys):
            reads.append(keys)
            if len(reads) > 1:
                return real_holders(user=user, keys=keys)
            if not bulk:  # the worker's claim commits right after this read
                TaskQueue.objects.filter(pk=holder.pk).update(status=TaskStatus.RUNNING)
            return {(pending.queue_id, "k"): pending}

        monkeypatch.setattr(services, "_active_holders", read_before_it_was_claimed)
        if bulk:
            spec = TaskSpec(task_type="echo", unique_key="k", payload={"v": 2}, on_conflict="replace")
            created = services.tasks_enqueue_bulk(user=alice, specs=[spec]).tasks[0]
        else:
            created = enqueue(alice, unique_key="k", payload={"v": 2}, on_conflict="replace").task
        assert len(reads) == 2  # it found the holder no longer pending, and looked again
        assert created.pk != holder.pk
        stored = TaskQueue.objects.get(pk=created.pk)
        assert (stored.status, stored.unique_key, stored.payload) == (TaskStatus.PENDING, "k", {"v": 2})
        running = TaskQueue.objects.get(pk=holder.pk)
        assert (running.status, running.unique_key, running.payload) == (TaskStatus.RUNNING, None, {"v": 1})

    def test_the_database_refuses_a_second_active_holder(self, alice, default_queue):
        make_task(alice, unique_key="k")
        with pytest.raises(IntegrityError), transaction.atomic():
            make_task(alice, unique_key="k")

    def test_retrying_a_task_whose_key_another_task_holds_conflicts(self, alice):
        old = enqueue(alice, unique_key="k").task
        TaskQueue.objects.filter(pk=old.pk).update(**finished_fields(TaskStatus.FAILED))
        enqueue(alice, unique_key="k")
        with pytest.raises(TaskStateConflict, match="unique key"):
            services.task_retry(task=TaskQueue.objects.get(pk=old.pk), by=alice)
        assert TaskQueue.objects.get(pk=old.pk).status == TaskStatus.FAILED

    def test_a_queue_with_a_quota_deduplicates_through_the_locked_path(self, alice, default_queue):
        QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=1)
        queue_cache.forget()
        try:
            first = enqueue(alice, unique_key="k")
            second = enqueue(alice, unique_key="k")
        finally:
            queue_cache.forget()  # the per-process cache outlives this test's transaction
        assert (second.created, second.deduplicated, second.task.pk) == (False, True, first.task.pk)

    @pytest.mark.parametrize("bulk", [False, True])
    def test_replacing_a_running_holder_counts_against_the_quota(self, alice, default_queue, bulk):
        # The superseded holder keeps running: the task that takes its key is one more active task.
        QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=2)
        queue_cache.forget()
        try:
            holder = enqueue(alice, unique_key="k", payload={"v": 1}).task
            TaskQueue.objects.filter(pk=holder.pk).update(status=TaskStatus.RUNNING)
            enqueue(alice)  # two active: the quota is full
            with pytest.raises(QuotaExceeded):
                if bulk:
                    spec = TaskSpec(task_type="echo", unique_key="k", payload={"v": 2}, on_conflict="replace")
                    services.tasks_enqueue_bulk(user=alice, specs=[spec])
                else:
                    enqueue(alice, unique_key="k", payload={"v": 2}, on_conflict="replace")
        finally:
            queue_cache.forget()
        running = TaskQueue.objects.get(pk=holder.pk)
        assert (running.status, running.unique_key) == (TaskStatus.RUNNING, "k")  # nothing superseded
        assert TaskQueue.objects.filter(owner=alice).count() == 2

    def test_bulk_deduplicates_against_the_table_and_within_the_request(self, alice):
        held = enqueue(alice, unique_key="a").task
        specs = [
            TaskSpec(task_type="echo", unique_key="a"),
            TaskSpec(task_type="echo", unique_key="b", payload={"v": 1}),
            TaskSpec(task_type="echo", unique_key="b", payload={"v": 2}, on_conflict="replace"),
            TaskSpec(task_type="echo"),
        ]
        result = services.tasks_enqueue_bulk(user=alice, specs=specs)
        assert result.created == 2
        assert result.tasks[0].pk == held.pk and held.pk in result.deduplicated
        assert result.tasks[1].pk == result.tasks[2].pk
        assert TaskQueue.objects.get(pk=result.tasks[1].pk).payload == {"v": 2}
        assert TaskQueue.objects.count() == 3

    def test_bad_keys_and_policies_are_refused_naming_the_field(self, alice):
        from tasks.errors import TaskSpecInvalid

        with pytest.raises(TaskSpecInvalid) as bad:
            enqueue(alice, unique_key="x" * 201, on_conflict="merge")
        assert set(bad.value.errors) == {"unique_key", "on_conflict"}


@pytest.mark.django_db
def test_the_api_answers_200_deduplicated_with_the_existing_task(alice_api, default_queue):
    body = {"task_type": "echo", "unique_key": "report-7"}
    first = alice_api.post("/api/tasks/", body, format="json")
    second = alice_api.post("/api/tasks/", body, format="json")
    assert first.status_code == 201 and first.json()["deduplicated"] is False
    assert second.status_code == 200, second.json()
    assert (second.json()["deduplicated"], second.json()["id"]) == (True, first.json()["id"])
    assert second.json()["unique_key"] == "report-7"


@pytest.mark.django_db
def test_the_api_refuses_a_bad_on_conflict_naming_it(alice_api, default_queue):
    answer = alice_api.post("/api/tasks/", {"task_type": "echo", "unique_key": "k", "on_conflict": "x"}, format="json")
    assert answer.status_code == 400
    assert "on_conflict" in answer.json()["detail"] or "on_conflict" in json.dumps(answer.json())


@pytest.mark.django_db
def test_bulk_marks_the_existing_tasks_deduplicated(alice_api, default_queue):
    alice_api.post("/api/tasks/", {"task_type": "echo", "unique_key": "a"}, format="json")
    body = {"tasks": [{"task_type": "echo", "unique_key": "a"}, {"task_type": "echo", "unique_key": "b"}]}
    answer = alice_api.post("/api/tasks/bulk/", body, format="json")
    assert answer.status_code == 201
    assert [task["deduplicated"] for task in answer.json()["tasks"]] == [True, False]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("on_conflict", ["return", "replace"])
def test_twenty_concurrent_enqueues_of_one_key_make_exactly_one_task(alice, default_queue, on_conflict):
    answers = race(alice, {"task_type": "echo", "unique_key": "nightly", "on_conflict": on_conflict})
    statuses = Counter(code for code, _ in answers)
    assert statuses == {201: 1, 200: POSTERS - 1}, answers
    assert len({body["id"] for _, body in answers}) == 1
    assert sum(body["deduplicated"] for _, body in answers) == POSTERS - 1
    assert TaskQueue.objects.count() == 1


@pytest.mark.django_db
def test_a_django_task_enqueued_with_a_unique_key_returns_the_active_holders_result(default_queue):
    from tasks.tests import djtasks

    first = djtasks.add.using(unique_key="add-once").enqueue(1, 2)
    second = djtasks.add.using(unique_key="add-once").enqueue(3, 4)
    assert second.id == first.id
    assert list(second.args) == [1, 2]
    replaced = djtasks.add.using(unique_key="add-once", on_conflict="replace").enqueue(5, 6)
    assert replaced.id == first.id
    assert TaskQueue.objects.get().payload == {"args": [5, 6], "kwargs": {}}
