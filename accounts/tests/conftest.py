"""Fixtures for the accounts tests (builders live in helpers.py)."""

from __future__ import annotations

import logging

import pytest

from accounts.services import TokenPair, session_start


@pytest.fixture
def alice_pair(alice) -> TokenPair:
    return session_start(user=alice)


@pytest.fixture
def auth_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
