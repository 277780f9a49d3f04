from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from bench.taskhub_side import ONE_READ_PATH

pytestmark = [pytest.mark.django_db, pytest.mark.urls("bench.taskhub_urls")]


def test_the_reference_endpoint_reads_once_without_authentication(django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        response = APIClient().get(ONE_READ_PATH)
    assert response.status_code == 200
    assert response.json() == {"read": 1}


def test_the_products_urls_are_all_still_served() -> None:
    assert APIClient().get("/api/auth/me/").json()["code"] == "token_missing"
    assert APIClient().get("/health/live").status_code == 200
    assert APIClient().get("/no-such-page").json()["code"] == "not_found"
