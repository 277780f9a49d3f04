"""Instances record their key fingerprint; check_production compares them (never the keys)."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

import pytest
from django.core.checks import ERROR, INFO
from django.db import OperationalError, connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import timezone

from accounts.fingerprint import key_fingerprint
from diagnostics import instances
from diagnostics.checks.fingerprints import check_key_fingerprints
from diagnostics.instances import InstanceFingerprintMiddleware, instance_record_seen
from diagnostics.models import InstanceFingerprint, InstanceRole
from diagnostics.tests.conftest import DEFAULT_DATABASE, STRONG_JWT_KEY, check_production_json, problems
from tasks.models import QueueConfig, WorkerProcess

OTHER_KEY = "another-key-some-instance-was-started-with-0123456789"


def seen(hostname: str, pid: int, key: str, *, minutes_ago: float = 1, role: str = InstanceRole.WEB):
    return InstanceFingerprint.objects.create(
        hostname=hostname,
        pid=pid,
        role=role,
        key_fingerprint=key_fingerprint(key),
        last_seen_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def worker(hostname: str, pid: int, key: str, *, minutes_ago: float = 0.1):
    return WorkerProcess.objects.create(
        worker_id=f"{hostname}:{pid}",
        hostname=hostname,
        pid=pid,
        key_fingerprint=key_fingerprint(key),
        last_heartbeat_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


@pytest.mark.django_db
def test_instances_and_workers_with_the_same_key_agree(production):
    seen("web-1", 101, STRONG_JWT_KEY)
    seen("web-2", 102, STRONG_JWT_KEY)
    worker("worker-1", 201, STRONG_JWT_KEY)
    [result] = check_key_fingerprints(databases=DEFAULT_DATABASE)
    assert result.level == INFO
    assert "2 web instance(s) and 1 worker(s)" in result.msg


@pytest.mark.django_db
def test_a_web_instance_with_another_key_is_an_error_naming_it_and_both_fingerprints(production):
    seen("web-1", 101, STRONG_JWT_KEY)
    seen("web-2", 4242, OTHER_KEY)
    [result] = check_key_fingerprints(databases=DEFAULT_DATABASE)
    assert (result.id, result.level) == ("diagnostics.E080", ERROR)
    assert "web web-2 pid 4242" in result.msg
    assert key_fingerprint(OTHER_KEY) in result.msg
    assert key_fingerprint(STRONG_JWT_KEY) in result.msg
    assert OTHER_KEY not in result.msg and STRONG_JWT_KEY not in result.msg


@pytest.mark.django_db
def test_a_worker_with_another_key_is_an_error(production):
    worker("worker-9", 909, OTHER_KEY)
    [result] = check_key_fingerprints(databases=DEFAULT_DATABASE)
    assert result.id == "diagnostics.E080"
    assert "worker worker-9 pid 909" in result.msg


@pytest.mark.django_db
def test_instances_not_seen_recently_are_ignored(production):
    seen("retired", 1, OTHER_KEY, minutes_ago=20)
    worker("retired-worker", 2, OTHER_KEY, minutes_ago=20)
    assert check_key_fingerprints(databases=DEFAULT_DATABASE)[0].level == INFO


@pytest.mark.django_db
def test_check_production_fails_on_a_fingerprint_recorded_by_another_instance(production):
    seen("web-2", 4242, OTHER_KEY)
    code, document = check_production_json()
    assert code == 1
    assert problems(document)["diagnostics.E080"] == "error"
    assert OTHER_KEY not in str(document)


@pytest.mark.django_db
def test_recording_inserts_then_refreshes_this_process_row(settings):
    earlier = timezone.now() - timedelta(minutes=5)
    instance_record_seen(now=earlier)
    instance_record_seen()
    row = InstanceFingerprint.objects.get()
    assert (row.hostname, row.pid, row.role) == (socket.gethostname(), os.getpid(), InstanceRole.WEB)
    assert row.key_fingerprint == key_fingerprint(settings.JWT_SECRET_KEY)
    assert row.first_seen_at == earlier
    assert row.last_seen_at > earlier


@pytest.mark.django_db
def test_recording_forgets_processes_gone_for_a_week():
    seen("long-gone", 7, OTHER_KEY, minutes_ago=8 * 24 * 60)
    instance_record_seen()
    assert list(InstanceFingerprint.objects.values_list("hostname", flat=True)) == [socket.gethostname()]


@pytest.fixture
def reporting(settings, monkeypatch):
    """Make this process's next report due now (each test starts just after one: conftest.py)."""
    settings.TASKHUB_INSTANCE_REPORT_SECONDS = 60
    monkeypatch.setattr(instances, "_next_report_at", 0.0)


def database_view(request):
    QueueConfig.objects.exists()
    return HttpResponse("ok")


@pytest.mark.django_db
def test_the_middleware_records_at_most_once_per_interval(reporting):
    middleware = InstanceFingerprintMiddleware(database_view)
    assert middleware(RequestFactory().get("/")).status_code == 200
    first = InstanceFingerprint.objects.get().last_seen_at
    middleware(RequestFactory().get("/"))
    assert InstanceFingerprint.objects.get().last_seen_at == first


@pytest.mark.django_db(transaction=True)
def test_the_middleware_does_not_touch_the_database_for_requests_that_did_not(reporting):
    connection.close()
    InstanceFingerprintMiddleware(lambda request: HttpResponse("alive"))(RequestFactory().get("/health/live"))
    assert connection.connection is None
    assert not InstanceFingerprint.objects.exists()


@pytest.mark.django_db
def test_a_failing_write_never_fails_the_request(reporting, monkeypatch, caplog):
    def broken(**kwargs):
        raise OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(instances, "instance_record_seen", broken)
    with caplog.at_level(logging.WARNING, logger="taskhub.diagnostics"):
        response = InstanceFingerprintMiddleware(database_view)(RequestFactory().get("/"))
    assert response.status_code == 200
    assert "Could not record this instance's key fingerprint" in caplog.text


@pytest.mark.django_db
def test_reporting_is_off_when_the_interval_is_zero(settings, monkeypatch):
    settings.TASKHUB_INSTANCE_REPORT_SECONDS = 0
    monkeypatch.setattr(instances, "_next_report_at", 0.0)
    InstanceFingerprintMiddleware(database_view)(RequestFactory().get("/"))
    assert not InstanceFingerprint.objects.exists()


def test_the_middleware_sits_right_after_the_database_session_middleware(settings):
    middleware = list(settings.MIDDLEWARE)
    position = middleware.index("core.db.middleware.DatabaseSessionMiddleware")
    assert middleware[position + 1] == "diagnostics.instances.InstanceFingerprintMiddleware"
