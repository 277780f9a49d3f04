"""Builders and probes shared by the accounts tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import jwt
import pytest
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

ALICE_PASSWORD = "alice-password-1"


def bearer(token: str) -> APIClient:
    """Return a client that sends `token` as its bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def claims(token: str) -> dict[str, Any]:
    """Return a token's payload without checking it."""
    return jwt.decode(token, options={"verify_signature": False})


def forge(payload: dict[str, Any], *, key: str, algorithm: str = "HS256", headers: dict | None = None) -> str:
    """Sign `payload` the way another (mis)configured issuer would."""
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def issued_at(offset: timedelta):
    """Patch simplejwt's clock so tokens are issued as if the issuer's clock were off by `offset`."""
    return mock.patch("rest_framework_simplejwt.tokens.aware_utcnow", return_value=timezone.now() + offset)


def failures(code: str) -> float:
    """Return the 401 counter for `code`."""
    return REGISTRY.get_sample_value("taskhub_auth_failures_total", {"code": code}) or 0.0


def session_durations() -> float:
    """Return how many session durations were observed."""
    return REGISTRY.get_sample_value("taskhub_user_session_duration_seconds_count") or 0.0


def rejection_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the `❌ Token验证失败` lines logged so far."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("❌ Token验证失败: ")]
