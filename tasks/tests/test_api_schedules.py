"""/api/schedules/: create, list, detail with the next fire times and last runs, PATCH, DELETE, pause, resume, run-now."""

from __future__ import annotations

import pytest

from tasks import schedules
from tasks.models import Schedule, ScheduleFire, TaskQueue

pytestmark = pytest.mark.django_db

BODY = {"name": "nightly report", "cron": "0 3 * * *", "timezone": "Asia/Shanghai", "task_type": "echo"}


def create(api, **changes):
    return api.post("/api/schedules/", {**BODY, **changes}, format="json")


def test_creating_a_schedule_answers_its_detail_with_the_next_five_fire_times(alice_api, default_queue):
    answer = create(alice_api, payload={"x": 1}, overlap="skip", misfire="skip")
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["name"], body["cron"], body["timezone"], body["queue"]) == (
        "nightly report",
        "0 3 * * *",
        "Asia/Shanghai",
        "default",
    )
    assert (body["overlap"], body["misfire"], body["is_paused"], body["interval_seconds"]) == (
        "skip",
        "skip",
        False,
        None,
    )
    assert len(body["next_fire_times"]) == 5
    assert all(moment.endswith("T19:00:00Z") for moment in body["next_fire_times"])  # 03:00 in Shanghai
    assert body["last_runs"] == []


def test_an_interval_schedule_is_created(alice_api, default_queue):
    body = {**BODY, "name": "poll", "interval_seconds": 30}
    del body["cron"]
    answer = alice_api.post("/api/schedules/", body, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["interval_seconds"] == 30


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 60}, "cron"),  # both
        ({"task_type": "no.such.type"}, "task_type"),
        ({"queue": "nope"}, "queue"),
        ({"overlap": "maybe"}, "overlap"),
        ({"misfire": "flood"}, "misfire"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_answers_400_naming_the_field(alice_api, default_queue, changes, field):
    answer = create(alice_api, **changes)
    assert answer.status_code == 400, answer.json()
    assert field in str(answer.json()), answer.json()
    assert not Schedule.objects.exists()


def test_neither_cron_nor_interval_is_refused(alice_api, default_queue):
    body = {key: value for key, value in BODY.items() if key != "cron"}
    answer = alice_api.post("/api/schedules/", body, format="json")
    assert answer.status_code == 400 and "cron" in str(answer.json())


def test_a_name_is_unique_per_owner(alice_api, bob_api, default_queue):
    assert create(alice_api).status_code == 201
    again = create(alice_api)
    assert again.status_code == 400
    assert "name" in str(again.json())
    assert create(bob_api).status_code == 201


def test_another_users_schedule_is_404_and_staff_see_all(alice_api, bob_api, staff_api, default_queue):
    pk = create(alice_api).json()["id"]
    for method in ("get", "patch", "delete"):
        assert getattr(bob_api, method)(f"/api/schedules/{pk}/", {}, format="json").status_code == 404
    for action in ("pause", "resume", "run-now"):
        assert bob_api.post(f"/api/schedules/{pk}/{action}/").status_code == 404
    assert bob_api.get("/api/schedules/").json() == []
    assert [s["id"] for s in staff_api.get("/api/schedules/").json()] == [pk]
    assert staff_api.get(f"/api/schedules/{pk}/").status_code == 200


def test_patch_switches_to_an_interval_and_moves_the_next_fire_time(alice_api, default_queue):
    pk = create(alice_api).json()["id"]
    answer = alice_api.patch(f"/api/schedules/{pk}/", {"interval_seconds": 10}, format="json")
    assert answer.status_code == 200, answer.json()
    assert (answer.json()["cron"], answer.json()["interval_seconds"]) == ("", 10)
    stored = Schedule.objects.get(pk=pk)
    assert stored.next_fire_at is not None
    assert alice_api.patch(f"/api/schedules/{pk}/", {"timezone": "Nowhere/Land"}, format="json").status_code == 400


def test_pause_resume_and_delete(alice_api, default_queue):
    pk = create(alice_api).json()["id"]
    paused = alice_api.post(f"/api/schedules/{pk}/pause/").json()
    assert (paused["is_paused"], paused["next_fire_at"], paused["next_fire_times"]) == (True, None, [])
    resumed = alice_api.post(f"/api/schedules/{pk}/resume/").json()
    assert resumed["is_paused"] is False and resumed["next_fire_at"] is not None
    assert alice_api.delete(f"/api/schedules/{pk}/").status_code == 204
    assert not Schedule.objects.exists()


def test_run_now_creates_a_task_carrying_the_schedule_and_it_shows_in_the_last_runs(alice_api, default_queue):
    pk = create(alice_api, payload={"v": 1}).json()["id"]
    answer = alice_api.post(f"/api/schedules/{pk}/run-now/")
    assert answer.status_code == 201, answer.json()
    task = answer.json()
    assert (task["schedule"], task["payload"], task["status"]) == (pk, {"v": 1}, "pending")
    assert alice_api.get(f"/api/tasks/{task['id']}/").json()["schedule"] == pk
    runs = alice_api.get(f"/api/schedules/{pk}/").json()["last_runs"]
    assert runs == [{"fire_time": task["run_at"], "outcome": "manual", "task": task["id"], "status": "pending"}]


def test_a_fired_task_runs_at_its_fire_time(alice_api, default_queue):
    body = {**BODY, "name": "tick", "interval_seconds": 5}
    del body["cron"]
    pk = alice_api.post("/api/schedules/", body, format="json").json()["id"]
    schedule = Schedule.objects.get(pk=pk)
    schedules.schedules_fire_due(now=schedule.next_fire_at)
    fire = ScheduleFire.objects.get()
    task = TaskQueue.objects.get()
    assert (task.run_at, task.schedule_id, fire.task_id) == (fire.fire_time, pk, task.pk)
