"""Concurrent refreshes of one token: each on its own connection, all served, one successor."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from accounts.models import IssuedRefreshToken, TokenFamily
from accounts.services import session_start
from accounts.tests.helpers import bearer, claims

CONCURRENCY = 10


def refresh_all_at_once(refresh: str) -> list:
    """POST the same refresh token from CONCURRENCY threads released together; return the responses."""
    barrier = threading.Barrier(CONCURRENCY)
    responses: list = [None] * CONCURRENCY

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            responses[index] = APIClient().post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
        except Exception as exc:  # reported by the assertions below
            responses[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a refresh never finished"
    return responses


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_refreshes_of_one_token_all_succeed_with_the_same_successor(alice):
    pair = session_start(user=alice)

    responses = refresh_all_at_once(pair.refresh)

    assert [getattr(r, "status_code", r) for r in responses] == [200] * CONCURRENCY
    successors = {r.json()["refresh"] for r in responses}
    assert len(successors) == 1
    [successor] = successors
    assert claims(successor)["fam"] == claims(pair.refresh)["fam"]
    assert IssuedRefreshToken.objects.count() == 2
    assert TokenFamily.objects.get().revoked_at is None
    for response in responses:
        assert bearer(response.json()["access"]).get("/api/auth/me/").status_code == 200
