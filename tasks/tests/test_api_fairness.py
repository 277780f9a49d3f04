"""The fairness and limit settings of a queue over REST, `concurrency_key` on enqueue, and queue status."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks import transitions
from tasks.backends.compat import InvalidTask
from tasks.limits import Rate, parse_rate, refill
from tasks.models import FAIR_WEIGHT_MAX, OwnerQueueSettings, QueueConfig, TaskQueue
from tasks.tests import djtasks
from tasks.tests.conftest import enqueue_many

pytestmark = pytest.mark.django_db

QUEUES = "/api/queues/"
TASKS = "/api/tasks/"
BULK = "/api/tasks/bulk/"
STATUS = "/api/tasks/queue-status"


def patch(client, name: str, body: dict):
    return client.patch(f"{QUEUES}{name}/", json.dumps(body), content_type="application/json")


def test_staff_set_fairness_and_limits_and_everyone_reads_them(staff_api, alice_api, default_queue):
    changes = {"fairness": "owner", "per_key_concurrency": 3, "rate_limit": "600/m", "rate_limit_per_key": True}
    response = patch(staff_api, "default", changes)
    assert response.status_code == 200, response.content
    default_queue.refresh_from_db()
    assert {name: getattr(default_queue, name) for name in changes} == changes
    shown = alice_api.get(f"{QUEUES}default/").json()
    assert {name: shown[name] for name in changes} == changes
    assert patch(staff_api, "default", {"rate_limit": "", "fairness": "none"}).status_code == 200
    default_queue.refresh_from_db()
    assert (default_queue.rate_limit, default_queue.fairness) == ("", "none")


def test_non_staff_cannot_change_fairness(alice_api, default_queue):
    assert patch(alice_api, "default", {"fairness": "owner"}).status_code == 403
    default_queue.refresh_from_db()
    assert default_queue.fairness == "none"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": "100"}, "rate_limit"),
        ({"rate_limit": "100/y"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit": "-5/s"}, "rate_limit"),
        ({"rate_limit": "10000000/s"}, "rate_limit"),
        ({"rate_limit": 100}, "rate_limit"),
        ({"rate_limit": "1/s" * 20}, "rate_limit"),
        ({"per_key_concurrency": -1}, "per_key_concurrency"),
        ({"per_key_concurrency": "2"}, "per_key_concurrency"),
        ({"per_key_concurrency": 2**40}, "per_key_concurrency"),
        ({"fairness": "tenant"}, "fairness"),
        ({"fairness": None}, "fairness"),
        ({"rate_limit_per_key": "yes"}, "rate_limit_per_key"),
    ],
)
def test_bad_fairness_settings_are_400_naming_the_field_and_change_nothing(staff_api, default_queue, changes, field):
    before = QueueConfig.objects.values().get(pk=default_queue.pk)
    response = patch(staff_api, "default", changes)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["errors"]) == {field}
    assert QueueConfig.objects.values().get(pk=default_queue.pk) == before


def test_enqueue_stores_the_concurrency_key(alice_api, default_queue):
    response = alice_api.post(TASKS, {"task_type": "echo", "concurrency_key": "acct-42 数据"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["concurrency_key"] == "acct-42 数据"
    assert TaskQueue.objects.get(pk=response.json()["id"]).concurrency_key == "acct-42 数据"
    plain = alice_api.post(TASKS, {"task_type": "echo"}, format="json").json()
    assert plain["concurrency_key"] is None


@pytest.mark.parametrize("key", ["k" * 201, 42, "", "\ud800"])
def test_a_bad_concurrency_key_is_400_naming_it(alice_api, default_queue, key):
    body = json.dumps({"task_type": "echo", "concurrency_key": key})
    response = alice_api.post(TASKS, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert set(response.json()["errors"]) == {"concurrency_key"}
    assert not TaskQueue.objects.exists()


def test_bulk_enqueue_takes_concurrency_keys_and_names_a_bad_one(alice_api, default_queue):
    good = [{"task_type": "echo", "concurrency_key": f"acct-{i}"} for i in range(3)]
    response = alice_api.post(BULK, {"tasks": good}, format="json")
    assert response.status_code == 201, response.content
    assert sorted(TaskQueue.objects.values_list("concurrency_key", flat=True)) == ["acct-0", "acct-1", "acct-2"]
    bad = [*good, {"task_type": "echo", "concurrency_key": "x" * 201}]
    response = alice_api.post(BULK, {"tasks": bad}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]["tasks"]["3"]) == {"concurrency_key"}
    assert TaskQueue.objects.count() == 3


def test_the_django_backend_takes_a_concurrency_key_per_task(default_queue):
    result = djtasks.add.using(concurrency_key="acct-7").enqueue(1, 2)
    assert TaskQueue.objects.get(pk=int(result.id)).concurrency_key == "acct-7"
    with pytest.raises(InvalidTask, match="concurrency_key"):
        djtasks.add.using(concurrency_key="k" * 201).enqueue(1, 2)


@pytest.fixture
def shares_scene(alice, bob, staff) -> tuple[QueueConfig, QueueConfig]:
    """A fair queue with two keys at their limit and two active owners; a rate-limited one throttled twice."""
    keyed = QueueConfig.objects.create(name="keyed", fairness="owner", per_key_concurrency=1)
    enqueue_many(alice, 3, queue=keyed, concurrency_key="a")
    enqueue_many(bob, 3, queue=keyed, concurrency_key="b")
    enqueue_many(staff, 1, queue=keyed, run_at=timezone.now() + timedelta(hours=1))
    assert len(transitions.claim(worker_id="w", queues=[keyed], limit=10).tasks) == 2  # one per key
    rated = QueueConfig.objects.create(name="rated", rate_limit="5/s")  # a bucket of 1
    enqueue_many(alice, 3, queue=rated)
    now = timezone.now()
    assert len(transitions.claim(worker_id="w", queues=[rated], limit=10, now=now).tasks) == 1
    assert transitions.claim(worker_id="w", queues=[rated], limit=10, now=now).tasks == []
    return keyed, rated


def test_queue_status_shows_fairness_owners_keys_at_limit_and_throttling(alice_api, shares_scene):
    shown = {q["name"]: q for q in alice_api.get(STATUS).json()}
    assert (shown["keyed"]["fairness"], shown["keyed"]["per_key_concurrency"]) == ("owner", 1)
    assert shown["keyed"]["active_owners"] == 2, "staff's task is not due yet"
    assert shown["keyed"]["keys_at_limit"] == 2
    assert (shown["rated"]["fairness"], shown["rated"]["rate_limit"], shown["rated"]["rate_limit_per_key"]) == (
        "none",
        "5/s",
        False,
    )
    assert shown["rated"]["active_owners"] == 1
    assert shown["rated"]["throttled_by_rate"] == 2
    assert shown["rated"]["keys_at_limit"] == 0


def test_the_dashboard_data_carries_the_same_fair_shares(client, staff, shares_scene):
    client.force_login(staff)
    shown = {q["name"]: q for q in client.get("/admin/taskhub/dashboard/data/").json()["queues"]}
    assert {name: shown["keyed"][name] for name in ("fairness", "active_owners", "keys_at_limit")} == {
        "fairness": "owner",
        "active_owners": 2,
        "keys_at_limit": 2,
    }
    assert (shown["rated"]["rate_limit"], shown["rated"]["throttled_by_rate"]) == ("5/s", 2)


def test_the_admin_queue_page_shows_its_fair_shares(client, staff, shares_scene):
    keyed, rated = shares_scene
    client.force_login(staff)
    page = client.get(f"/admin/tasks/queueconfig/{keyed.pk}/change/").content.decode()
    assert "Active owners: 2 · keys at limit: 2 · rate-throttled claims: 0" in page
    page = client.get(f"/admin/tasks/queueconfig/{rated.pk}/change/").content.decode()
    assert "Active owners: 1 · keys at limit: 0 · rate-throttled claims: 2" in page


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/s", Rate(100, 1)), ("600/m", Rate(600, 60)), (" 5 / 10s ", Rate(5, 10)), ("1/d", Rate(1, 86400))],
)
def test_rates_are_read_from_their_text(text, rate):
    assert parse_rate(text) == rate


def test_a_bucket_refills_at_the_rate_up_to_its_size_and_never_back_in_time():
    rate = Rate(50, 1)
    assert rate.burst == 10
    t0 = timezone.now()
    assert refill(0.0, t0, t0 + timedelta(milliseconds=100), rate)[0] == pytest.approx(5.0)
    assert refill(0.0, t0, t0 + timedelta(hours=1), rate)[0] == 10.0
    assert refill(3.0, t0, t0 - timedelta(seconds=5), rate) == (3.0, t0)
    assert Rate(1, 3600).burst == 1


# --- Per-owner weights ---------------------------------------------------------------------------


def settings_url(user) -> str:
    return f"/api/users/{user.pk}/queue-settings/"


def test_staff_set_a_users_fair_weight_and_read_it_back(staff_api, alice):
    assert staff_api.get(settings_url(alice)).json()["fair_weight"] == 1, "weight 1 until staff set one"
    response = staff_api.patch(settings_url(alice), {"fair_weight": 3}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["fair_weight"] == 3
    assert OwnerQueueSettings.objects.get(user=alice).fair_weight == 3
    assert staff_api.get(settings_url(alice)).json() == response.json()


def test_only_staff_see_or_set_fair_weights(alice_api, alice, bob):
    assert alice_api.get(settings_url(alice)).status_code == 403
    assert alice_api.patch(settings_url(bob), {"fair_weight": 5}, format="json").status_code == 403
    assert not OwnerQueueSettings.objects.exists()


def test_the_weight_of_an_unknown_user_is_404(staff_api):
    response = staff_api.patch("/api/users/999999/queue-settings/", {"fair_weight": 2}, format="json")
    assert response.status_code == 404


@pytest.mark.parametrize("weight", [0, -1, FAIR_WEIGHT_MAX + 1, 10**9, "3", 2.5, None, True])
def test_a_bad_fair_weight_is_400_naming_it_and_changes_nothing(staff_api, alice, weight):
    OwnerQueueSettings.objects.create(user=alice, fair_weight=2)
    response = staff_api.patch(settings_url(alice), {"fair_weight": weight}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["errors"]) == {"fair_weight"}
    assert OwnerQueueSettings.objects.get(user=alice).fair_weight == 2


def test_a_weight_set_in_the_admin_is_validated_like_the_api(client, staff, alice):
    client.force_login(staff)
    url = "/admin/tasks/ownerqueuesettings/add/"
    refused = client.post(url, {"user": alice.pk, "fair_weight": 0})
    assert refused.status_code == 200 and not OwnerQueueSettings.objects.exists()
    assert client.post(url, {"user": alice.pk, "fair_weight": 4}).status_code == 302
    assert OwnerQueueSettings.objects.get(user=alice).fair_weight == 4
