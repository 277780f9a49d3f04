"""A connection left inside a transaction is rolled back and logged with the marker."""

from __future__ import annotations

import logging

import pytest
from django.db import connection, transaction

from diagnostics.db_session import ensure_clean_session
from tasks.models import QueueConfig

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_clean_connection_is_left_alone(caplog):
    QueueConfig.objects.count()
    assert ensure_clean_session(context_id="req-1") is False
    assert "数据库会话错误" not in caplog.text


def test_an_abandoned_atomic_block_is_rolled_back_and_logged(caplog):
    block = transaction.atomic()
    block.__enter__()
    QueueConfig.objects.create(name="never-committed")
    with caplog.at_level(logging.ERROR, logger="taskhub.db"):
        assert ensure_clean_session(context_id="req-42") is True
    assert "❌ 数据库会话错误 [req-42]: ⚠️ 检测到未完成事务，强制回滚" in caplog.text
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    assert not QueueConfig.objects.filter(name="never-committed").exists()
