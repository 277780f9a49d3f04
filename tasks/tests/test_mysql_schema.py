"""On real MariaDB/MySQL: engines, charsets, foreign keys, 4-byte text and session variables."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction

from tasks.models import TaskQueue
from tasks.tests.factories import make_task

pytestmark = [pytest.mark.mysql, pytest.mark.django_db]

TABLES = ("task_queue", "queue_config", "task_worker", "task_status_count", "task_hourly_stats")


def fetch(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return list(cursor.fetchall())


@pytest.mark.parametrize("table", TABLES)
def test_table_is_innodb_utf8mb4(table):
    rows = fetch(
        "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
        [table],
    )
    assert rows, f"{table} is missing"
    engine, collation = rows[0]
    assert engine == "InnoDB"
    assert collation.startswith("utf8mb4_")


def test_text_columns_of_task_queue_are_utf8mb4():
    rows = fetch(
        "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'task_queue' AND CHARACTER_SET_NAME IS NOT NULL"
    )
    assert rows
    assert {charset for _, charset in rows} == {"utf8mb4"}


def test_foreign_keys_are_real_and_enforced(alice, default_queue):
    fks = fetch(
        "SELECT COLUMN_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'task_queue' AND REFERENCED_TABLE_NAME IS NOT NULL"
    )
    assert set(fks) == {("owner_id", "auth_user"), ("queue_id", "queue_config"), ("schedule_id", "task_schedule")}
    missing_queue = default_queue.pk + 10_000
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO task_queue (kind, task_type, payload, priority, status, attempts, max_attempts, run_at, "
                "claimed_by, progress, progress_message, error, attempt_errors, cancel_requested, created_at, "
                "owner_id, queue_id) "
                "VALUES ('handler', 'echo', '{}', 0, 'pending', 0, 3, NOW(6), '', 0, '', '', '[]', 0, NOW(6), %s, %s)",
                [alice.pk, missing_queue],
            )


def test_the_active_unique_key_is_a_stored_generated_column_under_a_unique_index():
    [(extra, expression)] = fetch(
        "SELECT EXTRA, GENERATION_EXPRESSION FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'task_queue' AND COLUMN_NAME = 'active_unique_key'"
    )
    assert "STORED" in extra.upper() and "unique_key" in expression
    columns = fetch(
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'task_queue' AND INDEX_NAME = 'task_active_unique_key_uniq' AND NON_UNIQUE = 0 "
        "ORDER BY SEQ_IN_INDEX"
    )
    assert [column for (column,) in columns] == ["owner_id", "queue_id", "active_unique_key"]


def test_four_byte_characters_round_trip_byte_for_byte(alice):
    payload = {"emoji": "🚀🔥👩‍💻", "math": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "cjk": "数据库会话错误", "mixed": "ü€😀𐍈"}
    task = make_task(alice, payload=payload, progress_message="进度 🐢", error="错误 💥")
    stored = TaskQueue.objects.get(pk=task.pk)
    assert stored.payload == payload
    assert stored.progress_message == "进度 🐢"
    assert stored.error == "错误 💥"
    raw_error = fetch("SELECT error, CAST(error AS BINARY) FROM task_queue WHERE id = %s", [task.pk])[0]
    assert raw_error[1] == "错误 💥".encode()
    raw_payload = fetch("SELECT payload FROM task_queue WHERE id = %s", [task.pk])[0][0]
    assert json.loads(raw_payload) == payload


def test_session_variables_from_init_command_are_in_effect_on_a_new_connection():
    fresh = connections.create_connection("default")
    try:
        with fresh.cursor() as cursor:
            cursor.execute(
                "SELECT @@session.wait_timeout, @@session.interactive_timeout, @@session.sql_mode, "
                "@@session.character_set_client, @@session.character_set_connection"
            )
            wait_timeout, interactive_timeout, sql_mode, cs_client, cs_connection = cursor.fetchone()
            cursor.execute(
                "SELECT @@session.tx_isolation" if fresh.mysql_is_mariadb else "SELECT @@session.transaction_isolation"
            )
            isolation = cursor.fetchone()[0]
            cursor.execute("SELECT @@global.wait_timeout, @@global.interactive_timeout")
            global_wait, global_interactive = cursor.fetchone()
    finally:
        fresh.close()
    assert wait_timeout == settings.MYSQL_WAIT_TIMEOUT
    assert (wait_timeout, interactive_timeout) != (global_wait, global_interactive), "came from init_command"
    assert interactive_timeout == settings.MYSQL_INTERACTIVE_TIMEOUT
    assert "STRICT_TRANS_TABLES" in sql_mode.split(",")
    assert (cs_client, cs_connection) == ("utf8mb4", "utf8mb4")
    assert isolation == "READ-COMMITTED"


def test_strict_mode_rejects_truncation_instead_of_silently_cutting(alice, default_queue):
    with pytest.raises(Exception) as caught, transaction.atomic():
        TaskQueue.objects.create(owner=alice, queue=default_queue, task_type="x" * 500)
    assert "Data too long" in str(caught.value)
