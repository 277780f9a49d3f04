"""/metrics: Prometheus text for a token or a staff session, with DB gauges read at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tasks import counters, transitions
from tasks.models import QueueConfig, TaskStatus
from tasks.tests.factories import finished_fields, make_task

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdef"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return _samples(response.content.decode())


def test_anonymous_scrapes_are_refused_with_401(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["code"] == "token_missing"
    assert response["WWW-Authenticate"].startswith("Bearer")


@override_settings(METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_a_wrong_token_is_refused_with_401(client, header):
    response = client.get("/metrics", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_without_a_configured_token_no_bearer_is_accepted(client):
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_a_signed_in_user_who_is_not_staff_gets_403(client, alice):
    client.force_login(alice)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_a_staff_session_may_scrape(client, staff):
    client.force_login(staff)
    response = client.get("/metrics/")
    assert response.status_code == 200
    assert b"taskhub_http_requests_total" in response.content


@override_settings(METRICS_TOKEN=TOKEN)
def test_it_exposes_the_request_auth_and_db_hygiene_series(client):
    client.get("/metrics")  # a 401 counted under its reason code
    client.get("/health/live")
    samples = _scrape(client)
    names = {name for name, _ in samples}
    assert ("taskhub_auth_failures_total", (("code", "token_missing"),)) in samples
    live = (("method", "GET"), ("route", "/health/live/?"), ("status", "200"))
    assert samples[("taskhub_http_requests_total", live)] >= 1
    assert ("taskhub_http_request_duration_seconds_count", live[:2]) in samples
    for name in (
        "taskhub_db_forced_rollbacks_total",
        "taskhub_db_reconnects_total",
        "taskhub_db_connections_opened_total",
        "taskhub_user_session_duration_seconds_count",
    ):
        assert name in names
    assert samples[("taskhub_db_up", ())] == 1


@override_settings(METRICS_TOKEN=TOKEN, TASKHUB_STATS_WINDOW_HOURS=24)
def test_it_reads_queue_depth_age_outcomes_and_durations_from_the_database(client, alice, default_queue):
    other = QueueConfig.objects.create(name="reports")
    make_task(alice, queue=default_queue, run_at=timezone.now() - timedelta(hours=1))
    make_task(alice, queue=default_queue)
    make_task(alice, queue=default_queue, status=TaskStatus.RUNNING)
    for status in (TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        make_task(alice, queue=other, **finished_fields(status, wait=1.0, run=2.0))
    with transaction.atomic():
        counters.rebuild()

    samples = _scrape(client)

    def tasks(queue: str, status: str) -> float:
        return samples[("taskhub_queue_tasks", (("queue", queue), ("status", status)))]

    assert tasks("default", "pending") == 2
    assert tasks("default", "running") == 1
    assert tasks("reports", "succeeded") == 2
    assert tasks("reports", "failed") == 1
    assert samples[("taskhub_queue_oldest_pending_age_seconds", (("queue", "default"),))] >= 3600
    assert samples[("taskhub_queue_oldest_pending_age_seconds", (("queue", "reports"),))] == 0
    assert samples[("taskhub_tasks_finished_recent", (("queue", "reports"), ("status", "succeeded")))] == 2
    assert samples[("taskhub_task_run_seconds_mean", (("queue", "reports"),))] == pytest.approx(2.0)
    assert samples[("taskhub_task_wait_seconds_mean", (("queue", "reports"),))] == pytest.approx(1.0)


@pytest.mark.mysql
@override_settings(METRICS_TOKEN=TOKEN)
def test_on_mysql_it_reports_server_connection_usage(client):
    samples = _scrape(client)
    connected = samples[("taskhub_db_threads_connected", ())]
    limit = samples[("taskhub_db_max_connections", ())]
    assert connected >= 1 and limit > 0
    assert samples[("taskhub_db_connection_usage_ratio", ())] == pytest.approx(connected / limit, abs=1e-3)


@pytest.mark.django_db(transaction=True)
def test_with_a_multiprocess_dir_a_scrape_merges_every_process(tmp_path):
    """Under gunicorn each worker process counts on its own; any one of them answers the scrape."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKHUB_READ_DOTENV": "0",
        "JWT_SECRET_KEY": settings.JWT_SECRET_KEY,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_TYPE": connection.vendor,
        "MYSQL_DATABASE": str(connection.settings_dict["NAME"]),
        "SQLITE_PATH": str(connection.settings_dict["NAME"]),
    }
    count = "import django; django.setup(); from core import metrics; metrics.DB_FORCED_ROLLBACKS.inc({})"
    scrape = "import django; django.setup(); from diagnostics.scrape import render_metrics; print(render_metrics()[0].decode())"
    root = Path(settings.BASE_DIR)
    for code in (count.format(2), count.format(3), scrape):
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert _samples(done.stdout)[("taskhub_db_forced_rollbacks_total", ())] == 5
    assert ("taskhub_db_up", ()) in _samples(done.stdout)


@override_settings(METRICS_TOKEN=TOKEN)
def test_it_reads_each_queues_fairness_owners_keys_at_limit_and_rate_throttling(client, alice, bob, default_queue):
    keyed = QueueConfig.objects.create(name="keyed", fairness="owner", per_key_concurrency=1)
    make_task(alice, queue=keyed, concurrency_key="acct-1", status=TaskStatus.RUNNING)
    make_task(alice, queue=keyed, concurrency_key="acct-1")
    make_task(bob, queue=keyed, concurrency_key="acct-2")
    rated = QueueConfig.objects.create(name="rated", rate_limit="1/h")
    make_task(alice, queue=rated)
    make_task(alice, queue=rated)
    transitions.claim(worker_id="w", queues=[rated], limit=5)  # one start, one left for want of a token

    samples = _scrape(client)

    assert samples[("taskhub_queue_fairness", (("mode", "owner"), ("queue", "keyed")))] == 1
    assert samples[("taskhub_queue_fairness", (("mode", "none"), ("queue", "default")))] == 1
    assert samples[("taskhub_queue_active_owners", (("queue", "keyed"),))] == 2
    assert samples[("taskhub_queue_keys_at_limit", (("queue", "keyed"),))] == 1
    assert samples[("taskhub_queue_rate_throttled_claims", (("queue", "rated"),))] == 1
    assert samples[("taskhub_queue_rate_throttled_claims", (("queue", "keyed"),))] == 0
