"""Fixtures of the task API tests: authenticated clients and a second queue."""

from __future__ import annotations

import pytest

from tasks.models import QueueConfig


@pytest.fixture
def alice_api(client_for, alice):
    return client_for(alice)


@pytest.fixture
def bob_api(client_for, bob):
    return client_for(bob)


@pytest.fixture
def staff_api(client_for, staff):
    return client_for(staff)


@pytest.fixture
def emails_queue(db):
    return QueueConfig.objects.create(name="emails", max_attempts=5)
