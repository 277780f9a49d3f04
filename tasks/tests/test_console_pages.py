"""The console's Schedules and Keys pages and the queue limits edited in place: who may, 400 codes, bounded reads."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import console_keys, console_schedules, schedule_services
from tasks.models import QueueConfig, Schedule, ScheduleFire, ScheduleFireOutcome, TaskQueue, TaskStatus
from tasks.tests.conftest import enqueue_many, explain

SCHEDULES = "/admin/taskhub/console/schedules/"
SCHEDULES_DATA = "/admin/taskhub/console/schedules/data/"
KEYS = "/admin/taskhub/console/keys/"
KEYS_DATA = "/admin/taskhub/console/keys/data/"
QUEUES = "/admin/taskhub/console/queues/"


def limits_url(name: str = "default") -> str:
    return f"/admin/taskhub/console/queues/{name}/limits/"


def action_url(schedule: Schedule, action: str) -> str:
    return f"/admin/taskhub/console/schedules/{schedule.pk}/{action}/"


def make_schedule(owner, queue: QueueConfig, name: str, **fields) -> Schedule:
    fields.setdefault("interval_seconds", 60)
    return schedule_services.schedule_create(
        user=owner, data={"name": name, "task_type": "echo", "queue": queue.name, **fields}
    )


def run(tasks: list[TaskQueue]) -> None:
    """Put tasks in the running state as a claim leaves them (test setup, not a transition under test)."""
    now = timezone.now()
    TaskQueue.objects.filter(pk__in=[t.pk for t in tasks]).update(
        status=TaskStatus.RUNNING,
        claimed_by="w",
        started_at=now,
        attempts=1,
        lease_expires_at=now + timedelta(seconds=60),
    )


def post_limits(client: Client, changes: dict, name: str = "default"):
    return client.post(limits_url(name), json.dumps(changes), content_type="application/json")


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def clerk(django_user_model):
    """Staff without any permission: may read the console, change nothing."""
    return django_user_model.objects.create_user("clerk", password="clerk-password-1", is_staff=True)


# --- Who may ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", SCHEDULES),
        ("get", SCHEDULES_DATA),
        ("post", "pause"),
        ("post", "resume"),
        ("post", "run-now"),
        ("get", KEYS),
        ("get", KEYS_DATA),
        ("post", "limits"),
    ],
)
def test_anyone_but_staff_gets_403_staff_only_and_nothing_changes(client, alice, default_queue, method, path):
    schedule = make_schedule(alice, default_queue, "nightly")
    if path == "limits":
        path = limits_url()
    elif method == "post":
        path = action_url(schedule, path)
    for user in (None, alice):
        if user:
            client.force_login(user)
        if method == "post":
            response = client.post(path, json.dumps({"max_concurrency": 3}), content_type="application/json")
        else:
            response = client.get(path)
        assert response.status_code == 403
        assert response.json()["code"] == "staff_only"
    assert not Schedule.objects.get().is_paused
    assert not TaskQueue.objects.exists()
    assert QueueConfig.objects.get(name="default").max_concurrency == 0


@pytest.mark.django_db
def test_actions_without_the_csrf_token_are_refused(staff, alice, default_queue):
    schedule = make_schedule(alice, default_queue, "nightly")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post(action_url(schedule, "pause")).status_code == 403
    assert post_limits(client, {"max_concurrency": 3}).status_code == 403
    assert not Schedule.objects.get().is_paused
    assert QueueConfig.objects.get(name="default").max_concurrency == 0
    token = client.get(SCHEDULES).cookies["csrftoken"].value
    assert client.post(action_url(schedule, "pause"), HTTP_X_CSRFTOKEN=token).status_code == 200
    response = client.post(
        limits_url(), json.dumps({"max_concurrency": 3}), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200
    assert Schedule.objects.get().is_paused
    assert QueueConfig.objects.get(name="default").max_concurrency == 3


@pytest.mark.django_db
def test_staff_without_the_change_permissions_read_but_change_nothing(django_user_model, clerk, alice, default_queue):
    schedule = make_schedule(alice, default_queue, "nightly")
    client = Client()
    client.force_login(clerk)
    assert client.get(SCHEDULES_DATA).status_code == 200
    assert client.get(KEYS_DATA).status_code == 200
    for path in (action_url(schedule, "pause"), action_url(schedule, "run-now")):
        response = client.post(path)
        assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    response = post_limits(client, {"max_concurrency": 3})
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    page = client.get(QUEUES).content.decode()
    assert 'data-can-edit="false"' in page and "th-limits-form" not in page
    assert not Schedule.objects.get().is_paused and not TaskQueue.objects.exists()

    clerk.user_permissions.add(
        Permission.objects.get(codename="change_schedule"), Permission.objects.get(codename="change_queueconfig")
    )
    client.force_login(django_user_model.objects.get(pk=clerk.pk))
    assert client.post(action_url(schedule, "pause")).status_code == 200
    assert post_limits(client, {"max_concurrency": 3}).status_code == 200
    assert 'data-can-edit="true"' in client.get(QUEUES).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["pause", "run-now", "limits"])
def test_the_actions_are_post_only(staff_client, alice, default_queue, path):
    schedule = make_schedule(alice, default_queue, "nightly")
    url = limits_url() if path == "limits" else action_url(schedule, path)
    assert staff_client.get(url).status_code == 405
    assert not Schedule.objects.get().is_paused and not TaskQueue.objects.exists()


# --- Schedules --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schedules_feed_shows_timing_next_fire_and_the_newest_fire(staff_client, alice, default_queue):
    cron = make_schedule(
        alice, default_queue, "nightly", interval_seconds=None, cron="0 3 * * *", timezone="Europe/Paris"
    )
    interval = make_schedule(alice, default_queue, "often", interval_seconds=90)
    now = timezone.now()
    for minutes, outcome in ((30, ScheduleFireOutcome.SKIPPED_OVERLAP), (10, ScheduleFireOutcome.FIRED)):
        ScheduleFire.objects.create(schedule=interval, fire_time=now - timedelta(minutes=minutes), outcome=outcome)
    task = enqueue_many(alice, 1, schedule_id=interval.pk)[0]
    ScheduleFire.objects.filter(outcome=ScheduleFireOutcome.FIRED).update(task=task)

    body = staff_client.get(SCHEDULES_DATA).json()
    rows = {row["name"]: row for row in body["schedules"]}
    assert body["next"] is None
    assert rows["nightly"]["cron"] == "0 3 * * *" and rows["nightly"]["timezone"] == "Europe/Paris"
    assert rows["nightly"]["owner"] == "alice" and rows["nightly"]["queue"] == "default"
    assert rows["nightly"]["next_fire_at"] == cron.next_fire_at.isoformat()
    assert rows["nightly"]["last_fire"] is None
    assert rows["often"]["interval_seconds"] == 90
    last = rows["often"]["last_fire"]
    assert last["outcome"] == "fired" and last["task_id"] == task.pk and last["task_status"] == "pending"
    assert last["fire_time"] == (now - timedelta(minutes=10)).isoformat()


@pytest.mark.django_db
def test_schedules_come_by_keyset_in_a_fixed_number_of_statements(staff_client, alice, default_queue):
    made = [make_schedule(alice, default_queue, f"s{i:03}") for i in range(console_schedules.PAGE_SIZE + 7)]
    for schedule in made:
        ScheduleFire.objects.create(schedule=schedule, fire_time=timezone.now(), outcome=ScheduleFireOutcome.FIRED)
    with CaptureQueriesContext(connection) as captured:
        first = console_schedules.schedules_data()
    assert len(captured.captured_queries) == 2  # the page with each newest fire's id, then those fires
    for query in captured.captured_queries:
        sql = query["sql"].upper()
        assert "OFFSET" not in sql and "COUNT(" not in sql and "DISTINCT" not in sql
    assert [row["id"] for row in first["schedules"]] == [s.pk for s in made[: console_schedules.PAGE_SIZE]]
    assert all(row["last_fire"] for row in first["schedules"])
    second = staff_client.get(SCHEDULES_DATA, {"after": first["next"]}).json()
    assert [row["id"] for row in second["schedules"]] == [s.pk for s in made[console_schedules.PAGE_SIZE :]]
    assert second["next"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("after", ["x", "-3", "1.5"])
def test_a_bad_schedules_cursor_is_400_invalid_cursor(staff_client, after):
    response = staff_client.get(SCHEDULES_DATA, {"after": after})
    assert response.status_code == 400
    assert response.json() == {"detail": "after must be a schedule id.", "code": "invalid_cursor", "field": "after"}


@pytest.mark.django_db
def test_pause_resume_and_run_now_use_the_schedule_services(staff_client, alice, default_queue):
    schedule = make_schedule(alice, default_queue, "nightly")
    assert staff_client.post(action_url(schedule, "pause")).json()["is_paused"] is True
    schedule.refresh_from_db()
    assert schedule.is_paused and schedule.next_fire_at is None

    response = staff_client.post(action_url(schedule, "run-now"))
    assert response.status_code == 201
    task = TaskQueue.objects.get(pk=response.json()["task"])
    assert (task.schedule_id, task.owner_id, task.status) == (schedule.pk, alice.pk, TaskStatus.PENDING)
    fire = ScheduleFire.objects.get(schedule=schedule)
    assert (fire.outcome, fire.task_id) == (ScheduleFireOutcome.MANUAL, task.pk)
    assert staff_client.get(SCHEDULES_DATA).json()["schedules"][0]["last_fire"]["outcome"] == "manual"

    assert staff_client.post(action_url(schedule, "resume")).json()["is_paused"] is False
    schedule.refresh_from_db()
    assert not schedule.is_paused and schedule.next_fire_at > timezone.now()


@pytest.mark.django_db
def test_an_unknown_schedule_is_404_and_a_full_quota_is_429(staff_client, alice, default_queue):
    response = staff_client.post("/admin/taskhub/console/schedules/999999/run-now/")
    assert (response.status_code, response.json()["code"]) == (404, "unknown_schedule")
    QueueConfig.objects.filter(pk=default_queue.pk).update(max_active_per_user=1)
    schedule = make_schedule(alice, default_queue, "nightly")
    enqueue_many(alice, 1)
    response = staff_client.post(action_url(schedule, "run-now"))
    assert (response.status_code, response.json()["code"]) == (429, "quota_exceeded")
    assert TaskQueue.objects.count() == 1 and not ScheduleFire.objects.exists()


@pytest.mark.django_db
def test_pausing_a_schedule_that_no_longer_passes_the_checks_is_400_naming_the_field(
    staff_client, alice, default_queue
):
    schedule = make_schedule(alice, default_queue, "nightly")
    Schedule.objects.filter(pk=schedule.pk).update(task_type="no.such.handler")
    response = staff_client.post(action_url(schedule, "pause"))
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid", "task_type")
    assert not Schedule.objects.get().is_paused


# --- Keys -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_keys_at_their_limit_come_fullest_first_and_are_bounded(alice, default_queue, monkeypatch):
    QueueConfig.objects.filter(pk=default_queue.pk).update(per_key_concurrency=1)
    run(enqueue_many(alice, 1, concurrency_key="one"))
    run(enqueue_many(alice, 3, concurrency_key="three"))  # over the limit: lowered while they ran
    monkeypatch.setattr(console_keys, "KEYS_LIMIT", 1)
    body = console_keys.keys_at_limit()
    assert [(k["key"], k["running"]) for k in body["keys"]] == [("three", 3)]
    assert body["truncated"] is True


@pytest.mark.django_db
def test_the_keys_feed_lists_keys_at_their_limit_and_live_unique_keys(staff_client, alice, bob, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(per_key_concurrency=2)
    emails = QueueConfig.objects.create(name="emails")  # no per-key limit: its keys are never "at the limit"
    run(enqueue_many(alice, 2, concurrency_key="tenant-a"))
    run(enqueue_many(alice, 1, concurrency_key="tenant-b"))
    enqueue_many(alice, 3, concurrency_key="tenant-b")  # pending: not running, not counted
    run(enqueue_many(alice, 5, queue=emails, concurrency_key="tenant-a"))
    held = enqueue_many(bob, 1, unique_key="report-7")[0]
    running_held = enqueue_many(alice, 1, unique_key="sync-1")[0]
    run([running_held])
    done = enqueue_many(alice, 1, unique_key="old")[0]
    TaskQueue.objects.filter(pk=done.pk).update(status=TaskStatus.SUCCEEDED, finished_at=timezone.now())

    body = staff_client.get(KEYS_DATA).json()
    assert [(k["queue"], k["key"], k["running"], k["limit"]) for k in body["concurrency"]["keys"]] == [
        ("default", "tenant-a", 2, 2)
    ]
    assert "concurrency_key=tenant-a" in body["concurrency"]["keys"][0]["search_url"]
    assert body["concurrency"]["queues"] == [{"name": "default", "per_key_concurrency": 2}]
    assert [(u["id"], u["key"], u["status"], u["owner"]) for u in body["unique_keys"]] == [
        (running_held.pk, "sync-1", "running", "alice"),
        (held.pk, "report-7", "pending", "bob"),
    ]
    assert body["next"] is None and body["partial"] is False


@pytest.mark.django_db
def test_live_unique_keys_are_read_from_task_queue_alone_and_the_names_apart(alice, default_queue):
    enqueue_many(alice, 1, unique_key="sync-1")
    with CaptureQueriesContext(connection) as queries:
        keys = console_keys.live_unique_keys()
    assert [(k["key"], k["queue"], k["owner"]) for k in keys["unique_keys"]] == [("sync-1", "default", "alice")]
    reads = [q["sql"] for q in queries.captured_queries if "task_queue" in q["sql"]]
    assert reads and not [sql for sql in reads if "JOIN" in sql.upper()]


@pytest.mark.django_db
def test_live_unique_keys_come_by_keyset_and_a_sparse_scan_is_bounded(staff_client, alice, default_queue, monkeypatch):
    monkeypatch.setattr(console_keys, "PAGE_SIZE", 3)
    monkeypatch.setattr(console_keys, "SCAN_LIMIT", 5)
    keyed = [enqueue_many(alice, 1, unique_key=f"k{i}")[0] for i in range(4)]
    enqueue_many(alice, 6)  # newer live tasks without a key: more than one scan's worth
    first = staff_client.get(KEYS_DATA).json()
    assert first["unique_keys"] == [] and first["partial"] is True and first["scanned"] == 5
    second = staff_client.get(KEYS_DATA, {"before": first["next"]}).json()
    assert [u["key"] for u in second["unique_keys"]] == ["k3", "k2", "k1"]
    third = staff_client.get(KEYS_DATA, {"before": second["next"]}).json()
    assert [u["id"] for u in third["unique_keys"]] == [keyed[0].pk] and third["next"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("before", ["x", "0", "-4"])
def test_a_bad_keys_cursor_is_400_invalid_cursor(staff_client, before):
    response = staff_client.get(KEYS_DATA, {"before": before})
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("invalid_cursor", "before")


@pytest.mark.django_db
def test_without_per_key_queues_the_keys_feed_reads_no_running_tasks(staff_client, alice, default_queue):
    run(enqueue_many(alice, 3, concurrency_key="tenant-a"))
    with CaptureQueriesContext(connection) as captured:
        body = console_keys.keys_at_limit()
    assert body == {"keys": [], "queues": [], "truncated": False}
    assert len(captured.captured_queries) == 1  # the queues with a per-key limit: none


# --- Queue limits, in place ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_limits_are_changed_in_place_and_the_feed_shows_them(staff_client, default_queue):
    changes = {
        "max_concurrency": 8,
        "fairness": "owner",
        "per_key_concurrency": 2,
        "rate_limit": "600/m",
        "rate_limit_per_key": True,
    }
    response = post_limits(staff_client, changes)
    assert response.status_code == 200, response.content
    assert response.json()["limits"] == changes
    queue = QueueConfig.objects.get(pk=default_queue.pk)
    assert {name: getattr(queue, name) for name in changes} == changes
    row = next(q for q in staff_client.get("/admin/taskhub/console/queues/data/").json()["queues"])
    assert row["limits_url"] == limits_url()
    assert {name: row["limits"][name] for name in changes} == changes
    assert post_limits(staff_client, {"rate_limit": ""}).status_code == 200
    assert QueueConfig.objects.get(pk=default_queue.pk).rate_limit == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"max_concurrency": "5"}, "max_concurrency"),
        ({"max_concurrency": 5.0}, "max_concurrency"),
        ({"max_concurrency": 10**12}, "max_concurrency"),
        ({"max_concurrency": None}, "max_concurrency"),
        ({"fairness": "lottery"}, "fairness"),
        ({"per_key_concurrency": -2}, "per_key_concurrency"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit_per_key": "yes"}, "rate_limit_per_key"),
        ({"description": "not here"}, "description"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_limits_are_400_invalid_naming_the_field_as_the_rest_patch_does(
    staff_client, staff_api, default_queue, changes, field
):
    before = QueueConfig.objects.values().get(pk=default_queue.pk)
    response = post_limits(staff_client, changes)
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid", field)
    assert set(body["errors"]) == {field}
    assert QueueConfig.objects.values().get(pk=default_queue.pk) == before
    if field != "description":  # the REST PATCH changes the description; the console edits only limits
        rest = staff_api.patch("/api/queues/default/", json.dumps(changes), content_type="application/json").json()
        assert (rest["code"], rest["errors"]) == (body["code"], body["errors"])


@pytest.mark.django_db
@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"x"'])
def test_a_limits_body_that_is_not_a_json_object_is_400_parse_error(staff_client, default_queue, body):
    response = staff_client.post(limits_url(), body, content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (400, "parse_error")


@pytest.mark.django_db
def test_limits_of_an_unknown_queue_are_404(staff_client):
    response = post_limits(staff_client, {"max_concurrency": 1}, name="nope")
    assert (response.status_code, response.json()["code"]) == (404, "unknown_queue")


# --- Pages ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "text"),
    [(SCHEDULES, "每个计划任务"), (KEYS, "已达上限的并发键"), (QUEUES, "最大并发数")],
)
def test_the_pages_render_in_chinese(staff_client, alice, default_queue, path, text):
    make_schedule(alice, default_queue, "nightly")
    response = staff_client.get(path, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200
    assert text in response.content.decode()


@pytest.mark.django_db
def test_the_admin_index_links_the_new_pages(staff_client):
    page = staff_client.get("/admin/").content.decode()
    assert SCHEDULES in page and KEYS in page


# --- On MariaDB: task_queue only through the live set ----------------------------------------------------


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_the_keys_and_schedules_read_task_queue_only_through_the_live_set(alice, default_queue):
    QueueConfig.objects.filter(pk=default_queue.pk).update(per_key_concurrency=1)
    now = timezone.now()
    history = [
        TaskQueue(
            owner=alice,
            queue=default_queue,
            task_type="echo",
            status=TaskStatus.SUCCEEDED,
            finished_at=now,
            unique_key=f"u{i}",
            concurrency_key=f"c{i % 7}",
        )
        for i in range(5000)
    ]
    TaskQueue.objects.bulk_create(history, batch_size=1000)
    run(enqueue_many(alice, 20, concurrency_key="tenant-a"))
    for i in range(10):
        enqueue_many(alice, 1, unique_key=f"live-{i}")
    schedule = make_schedule(alice, default_queue, "nightly")
    ScheduleFire.objects.create(schedule=schedule, fire_time=now, outcome=ScheduleFireOutcome.FIRED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE task_queue, task_schedule, task_schedule_fire")
        cursor.fetchall()

    with CaptureQueriesContext(connection) as captured:
        body = console_keys.keys_data()
        console_schedules.schedules_data()
    assert [k["key"] for k in body["concurrency"]["keys"]] == ["tenant-a"]
    assert len(body["unique_keys"]) == 10
    reads = [q["sql"] for q in captured.captured_queries if "task_queue" in q["sql"]]
    assert len(reads) == 4  # running per key; the live ids of each status; those rows by id
    for sql in reads:
        plan = [line for line in explain(sql) if line["table"] in ("task_queue", "<subquery2>")]
        assert plan, sql
        for line in plan:
            assert line["type"] != "ALL", (sql, line)
            # An index that starts with status (the live rows' entries only), or the primary key.
            assert line["key"] in ("task_claim_idx", "task_fair_idx", "task_lease_idx", "task_live_idx", "PRIMARY"), (
                sql,
                line,
            )
            assert int(line["rows"]) < 1000, (sql, line)  # the live set, not the 5,000 finished
    fire_reads = [q["sql"] for q in captured.captured_queries if "task_schedule_fire" in q["sql"]]
    newest = next(sql for sql in fire_reads if "task_schedule`" in sql)
    fire_plan = [line for line in explain(newest) if line["select_type"] == "DEPENDENT SUBQUERY"]
    assert [(line["table"], line["key"]) for line in fire_plan] == [("U0", "task_schedule_fire_uniq")], fire_plan
    assert "filesort" not in (fire_plan[0]["extra"] or "")
