"""A read-only API request whose connection is lost is read again once; a write keeps its 503."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from tasks import selectors, services

pytestmark = pytest.mark.django_db

LOST = (2013, "Lost connection to server during query")


def failing(real, times: int):
    """Return `real` wrapped to lose the connection on its first `times` calls."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError(*LOST)
        return real(*args, **kwargs)

    wrapper.calls = calls
    return wrapper


def test_a_read_that_lost_its_connection_is_answered_by_a_second_attempt(client_for, alice, monkeypatch):
    statistics = failing(selectors.task_statistics, times=1)
    monkeypatch.setattr(selectors, "task_statistics", statistics)

    response = client_for(alice).get("/api/tasks/statistics")

    assert response.status_code == 200
    assert response.json()["scope"] == "own"
    assert len(statistics.calls) == 2


def test_a_read_is_retried_only_once(client_for, alice, monkeypatch):
    statistics = failing(selectors.task_statistics, times=2)
    monkeypatch.setattr(selectors, "task_statistics", statistics)

    response = client_for(alice).get("/api/tasks/statistics")

    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert len(statistics.calls) == 2


def test_a_write_that_lost_its_connection_is_never_retried(client_for, alice, default_queue, monkeypatch):
    enqueue = failing(services.task_enqueue, times=1)
    monkeypatch.setattr(services, "task_enqueue", enqueue)

    response = client_for(alice).post("/api/tasks/", {"task_type": "echo"}, format="json")

    assert response.status_code == 503
    assert len(enqueue.calls) == 1


def test_other_database_errors_are_not_retried(client_for, alice, monkeypatch):
    calls = []

    def too_many_connections(**kwargs):
        calls.append(1)
        raise OperationalError(1040, "Too many connections")

    monkeypatch.setattr(selectors, "task_statistics", too_many_connections)

    assert client_for(alice).get("/api/tasks/statistics").status_code == 503
    assert len(calls) == 1
