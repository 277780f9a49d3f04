"""Shared test set-up: the cast (alice, bob, staff) and the SQLite/MySQL split."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from rest_framework.test import APIClient


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run `mysql`-marked tests only against MySQL and `sqlite`-marked ones only on SQLite.

    They are deselected (not skipped) in the other pass, because `make test` runs both passes.
    `cluster` tests start servers of their own and run only in `make cluster-test` (`-m cluster`).
    """
    vendor = connection.vendor
    markexpr = config.getoption("markexpr") or ""
    cluster_run = "cluster" in markexpr and "not cluster" not in markexpr
    keep, drop = [], []
    for item in items:
        wants_mysql = item.get_closest_marker("mysql") is not None
        wants_sqlite = item.get_closest_marker("sqlite") is not None
        wants_cluster = item.get_closest_marker("cluster") is not None
        if (wants_mysql and vendor != "mysql") or (wants_sqlite and vendor != "sqlite") or wants_cluster != cluster_run:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {connection.vendor} ({connection.settings_dict['NAME']})"


@pytest.fixture(autouse=True)
def fresh_queue_cache():
    """Each test starts with an empty per-process queue cache (queues are re-created per test)."""
    from tasks import queue_cache

    queue_cache.forget()
    yield
    queue_cache.forget()


@pytest.fixture(autouse=True)
def instance_report_just_made():
    """Each test starts just after this process reported its key fingerprint, as a server does 59 s a minute.

    The fingerprint middleware stays on, as in production; only the request on which a report
    falls due writes it (diagnostics/tests/test_check_fingerprints.py), so the query budgets of
    the other tests are those of every other request.
    """
    from django.conf import settings

    from diagnostics import instances

    instances._next_report_at = time.monotonic() + settings.TASKHUB_INSTANCE_REPORT_SECONDS


@pytest.fixture(autouse=True)
def session_tracking_starts_clean():
    """What the test framework ran between tests (a flush's `SET FOREIGN_KEY_CHECKS`) is no request's doing."""
    from django.db import connections

    from core.db.session_state import start_tracking

    for alias in connections:
        wrapper = connections[alias]
        if wrapper.vendor == "mysql" and wrapper.connection is not None:
            start_tracking(wrapper.connection)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-password-1")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "staff", "staff@example.com", "staff-password-1", is_staff=True, is_superuser=True
    )


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    """Return a function that builds an API client authenticated as the given user."""

    def build(user) -> APIClient:
        from accounts.services import session_start

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {session_start(user=user).access}")
        return client

    return build


@pytest.fixture
def default_queue(db):
    """The `default` queue (re-created after transactional tests flushed the migration's row)."""
    from tasks.models import QueueConfig

    return QueueConfig.objects.get_or_create(name="default")[0]
