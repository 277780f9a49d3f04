"""manage.py fix_mysql on real MariaDB/MySQL: dry run, --apply, idempotence, skips, globals, scope."""

from __future__ import annotations

import pytest
from django.core.checks import INFO
from django.db import connection
from django.db.backends.mysql.base import DatabaseWrapper

from diagnostics.checks import schema
from diagnostics.fixes.apply import apply_plan
from diagnostics.fixes.plan import Fix, Plan, build_plan, plan_globals
from diagnostics.fixes.snapshot import take_snapshot
from diagnostics.tests.conftest import DEFAULT_DATABASE, connection_settings, execute, run_command
from tasks.models import TaskQueue

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]

TEXTS = ["café crème", "naïve façade", "Ångström – déjà vu", "€ 12,50 — ½ ¾", "Ærø ÿ ß", "plain ascii", None]


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


@pytest.fixture
def tables():
    """Tables a test creates in the test database; dropped afterwards, even on failure."""
    created: list[str] = []
    yield created
    for name in created:
        execute(f"DROP TABLE IF EXISTS {quote(name)}")


@pytest.fixture
def legacy(tables) -> str:
    """A latin1 MyISAM table holding accented text, as an old installation left it."""
    tables.append("diag_legacy")
    execute(
        "CREATE TABLE diag_legacy (id INT PRIMARY KEY AUTO_INCREMENT, body VARCHAR(200), note TEXT, "
        "KEY body_idx (body)) ENGINE=MyISAM DEFAULT CHARSET=latin1"
    )
    for round_ in range(6):
        for value in TEXTS:
            execute("INSERT INTO diag_legacy (body, note) VALUES (%s, %s)", [value, f"{value} #{round_}"])
    return "diag_legacy"


def catalog(table: str) -> list[tuple]:
    """What information_schema says about a table, its columns and its indexes."""
    return (
        execute(
            "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [table],
        )
        + execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            [table],
        )
        + execute(
            "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            [table],
        )
    )


def checksum(table: str) -> int:
    return execute(f"CHECKSUM TABLE {quote(table)}")[0][1]


def decoded(table: str) -> tuple:
    """Row count and a digest of the text as characters (not bytes), comparable across charsets."""
    return execute(
        "SELECT COUNT(*), SHA2(GROUP_CONCAT(CONCAT_WS('|', id, COALESCE(CONVERT(body USING utf8mb4), '∅'), "
        f"CONVERT(note USING utf8mb4)) ORDER BY id SEPARATOR '\\n'), 256) FROM {quote(table)}"
    )[0]


def rows(table: str) -> list[tuple]:
    return execute(f"SELECT id, body, note FROM {quote(table)} ORDER BY id")


def test_the_dry_run_shows_the_exact_sql_and_changes_nothing(legacy):
    before = (catalog(legacy), checksum(legacy), rows(legacy))
    code, output = run_command("fix_mysql")
    assert code == 0
    assert "Dry run: nothing is changed" in output
    assert "SQL: ALTER TABLE `diag_legacy` ENGINE=InnoDB;" in output
    assert "SQL: ALTER TABLE `diag_legacy` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;" in output
    assert output.index("ENGINE=InnoDB") < output.index("CONVERT TO CHARACTER SET")
    assert (catalog(legacy), checksum(legacy), rows(legacy)) == before


def test_apply_converts_the_table_and_the_text_reads_back_the_same(legacy):
    text_before, digest_before = rows(legacy), decoded(legacy)
    assert text_before[0][1] == "café crème"  # it really was stored as latin1 text
    code, output = run_command("fix_mysql", "--apply")
    assert code == 0, output
    assert "[1/2] diag_legacy: move to InnoDB (≈ 42 rows) …" in output
    assert "[2/2] diag_legacy: convert to utf8mb4 (≈ 42 rows) …" in output
    assert "A second run finds nothing to do." in output
    assert catalog(legacy)[0] == ("InnoDB", "utf8mb4_unicode_ci")
    assert {row[2] for row in catalog(legacy)[1:4] if row[2]} == {"utf8mb4"}
    assert rows(legacy) == text_before
    assert decoded(legacy) == digest_before
    assert decoded(legacy)[0] == 42


def test_a_second_run_is_a_no_op(legacy):
    assert run_command("fix_mysql", "--apply")[0] == 0
    state = (catalog(legacy), checksum(legacy))
    code, output = run_command("fix_mysql", "--apply")
    assert code == 0
    assert "Nothing to do" in output
    assert "ALTER" not in output
    assert (catalog(legacy), checksum(legacy)) == state


def test_tables_it_cannot_convert_safely_are_skipped_untouched_with_the_reason(legacy, tables):
    tables += ["diag_wide", "diag_bytes"]
    execute("CREATE TABLE diag_wide (id INT PRIMARY KEY, name VARCHAR(1000), KEY name_idx (name)) CHARSET=latin1")
    execute("INSERT INTO diag_wide VALUES (1, 'é')")
    execute("CREATE TABLE diag_bytes (id INT PRIMARY KEY, t VARCHAR(50) CHARACTER SET ascii) CHARSET=latin1")
    execute("INSERT INTO diag_bytes VALUES (1, _binary 0x68E96C6C6F), (2, 'fine')")
    before = {name: (catalog(name), checksum(name)) for name in ("diag_wide", "diag_bytes")}
    code, output = run_command("fix_mysql", "--apply")
    assert code == 0, output
    assert "⚠️  diag_wide: not converted to utf8mb4: index name_idx would need 4000 bytes" in output
    assert "⚠️  diag_bytes: not converted to utf8mb4: column(s) t (ascii) hold bytes" in output
    assert {name: (catalog(name), checksum(name)) for name in ("diag_wide", "diag_bytes")} == before
    assert catalog(legacy)[0] == ("InnoDB", "utf8mb4_unicode_ci")  # the others were still fixed


def test_a_dropped_foreign_key_is_recreated_unless_rows_point_at_nothing(alice, default_queue):
    field = TaskQueue._meta.get_field("queue")
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "task_queue")
    [name] = [name for name, info in constraints.items() if info["foreign_key"] == ("queue_config", "id")]
    execute(f"ALTER TABLE task_queue DROP FOREIGN KEY {quote(name)}")
    orphan = TaskQueue.objects.create(owner=alice, queue_id=default_queue.pk + 999, task_type="echo")
    try:
        code, output = run_command("fix_mysql", "--apply")
        assert code == 0
        assert "task_queue.queue_id → queue_config.id not added: 1 row(s) point at rows that do not exist" in output
        orphan.delete()
        code, output = run_command("fix_mysql", "--apply")
        assert code == 0
        assert f"ADD CONSTRAINT `{name}` FOREIGN KEY (`queue_id`) REFERENCES `queue_config` (`id`)" in output
    finally:
        TaskQueue.objects.filter(pk=orphan.pk).delete()
        if any(r.id == "diagnostics.E047" for r in schema.check_tables(databases=DEFAULT_DATABASE)):
            with connection.schema_editor() as editor:
                editor.execute(editor._create_fk_sql(TaskQueue, field, "_fk_%(to_table)s_%(to_column)s"))
    assert [r.level for r in schema.check_tables(databases=DEFAULT_DATABASE)] == [INFO]


@pytest.fixture
def scratch_database():
    """A throw-away database next to the test database, and a connection to it."""
    name = "taskhub_diag_scratch_fix"
    execute(f"DROP DATABASE IF EXISTS {quote(name)}")
    execute(f"CREATE DATABASE {quote(name)} CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    scratch = DatabaseWrapper({**connection.settings_dict, "NAME": name}, alias="scratch")
    try:
        yield name, scratch
    finally:
        scratch.close()
        execute(f"DROP DATABASE IF EXISTS {quote(name)}")


def test_the_database_default_is_converted_too(scratch_database):
    name, scratch = scratch_database
    with scratch.cursor() as cursor:
        cursor.execute("CREATE TABLE old_notes (id INT PRIMARY KEY, body VARCHAR(20)) ENGINE=MyISAM")
        cursor.execute("INSERT INTO old_notes VALUES (1, 'déjà')")
    plan = build_plan(take_snapshot(scratch))
    assert [(fix.kind, fix.target) for fix in plan.fixes] == [
        ("database", name),
        ("engine", "old_notes"),
        ("charset", "old_notes"),
    ]
    reports: list[str] = []
    outcomes = apply_plan(plan, connection=scratch, report=reports.append)
    assert all(outcome.ok for outcome in outcomes), reports
    after = take_snapshot(scratch)
    # Nothing was utf8mb4 yet: the server's utf8mb4 default (MariaDB general_ci, MySQL 8 0900_ai_ci).
    (server_default,) = execute(
        "SELECT DEFAULT_COLLATE_NAME FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = 'utf8mb4'"
    )[0]
    assert (after.charset, after.collation) == ("utf8mb4", server_default)
    assert {table.collation for table in after.tables} == {server_default}
    assert build_plan(after).nothing_to_do
    with scratch.cursor() as cursor:
        cursor.execute("SELECT body FROM old_notes")
        assert cursor.fetchone() == ("déjà",)


def test_it_acts_on_the_configured_database_only(scratch_database, legacy):
    name, scratch = scratch_database
    with scratch.cursor() as cursor:
        cursor.execute("CREATE TABLE elsewhere (id INT PRIMARY KEY, body VARCHAR(20)) ENGINE=MyISAM")
    assert run_command("fix_mysql", "--apply")[0] == 0
    assert catalog(legacy)[0] == ("InnoDB", "utf8mb4_unicode_ci")
    outside = execute("SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", [name])
    assert outside == [("MyISAM", "latin1_swedish_ci")]


@pytest.fixture
def limited_account():
    """An account with every privilege on the test database and none on the server."""
    user, password = "taskhub_diag_nopriv", "NoPriv-0b2d4f6a8c"
    execute(f"DROP USER IF EXISTS '{user}'@'%%'")
    execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", [password])
    try:
        execute(f"GRANT ALL PRIVILEGES ON {quote(connection.settings_dict['NAME'])}.* TO '{user}'@'%%'")
        yield user, password
    finally:
        execute(f"DROP USER IF EXISTS '{user}'@'%%'")


def global_values() -> tuple:
    return execute(
        "SELECT @@GLOBAL.innodb_buffer_pool_size, @@GLOBAL.max_connections, @@GLOBAL.wait_timeout, "
        "@@GLOBAL.interactive_timeout, @@GLOBAL.sql_mode"
    )[0]


def test_set_globals_without_the_privilege_explains_and_changes_nothing(limited_account, settings):
    user, password = limited_account
    before = global_values()
    with connection_settings(USER=user, PASSWORD=password):
        snapshot = take_snapshot(connection)
        assert snapshot.can_set_globals is False
        code, output = run_command("fix_mysql", "--apply", "--set-globals")
        assert code == 0, output
        # Whatever differs on this shared server is explained, not attempted.
        assert "SET GLOBAL" not in output.split("Skipped")[0]
        attempted, explained = plan_globals(snapshot, sql_mode=settings.MYSQL_SQL_MODE)
        assert attempted == []
        assert all(f"⚠️  {skip.target}: {skip.reason}" in output for skip in explained)
        forced = Plan(fixes=(Fix("global", "wait_timeout", "test", ("SET GLOBAL wait_timeout = 28800",)),))
        reports: list[str] = []
        [outcome] = apply_plan(forced, connection=connection, report=reports.append)
    assert not outcome.ok
    assert "SUPER" in outcome.error and "ask a DBA" in outcome.error
    assert global_values() == before


def test_set_globals_with_the_privilege_sets_a_differing_global(monkeypatch):
    (original,) = execute("SELECT @@GLOBAL.interactive_timeout")[0]
    execute("SET GLOBAL interactive_timeout = 28799")
    try:
        snapshot = take_snapshot(connection)
        plan = build_plan(snapshot, set_globals=True, sql_mode="STRICT_TRANS_TABLES")
        fixes = tuple(fix for fix in plan.fixes if fix.target == "interactive_timeout")
        assert fixes[0].sql == ("SET GLOBAL interactive_timeout = 28800",)
        [outcome] = apply_plan(Plan(fixes=fixes), connection=connection, report=lambda line: None)
        assert outcome.ok
        assert execute("SELECT @@GLOBAL.interactive_timeout")[0][0] == 28800
    finally:
        execute(f"SET GLOBAL interactive_timeout = {int(original)}")


def test_long_statements_report_progress_while_they_run():
    reports: list[str] = []
    slow = Plan(fixes=(Fix("engine", "slow_table", "test", ("SELECT SLEEP(1.5)",), rows=10),))
    [outcome] = apply_plan(slow, connection=connection, report=reports.append, progress_interval=0.3)
    assert outcome.ok
    assert reports[0] == "[1/1] slow_table: move to InnoDB (≈ 10 rows) …"
    assert any(line.startswith("    … still running") for line in reports[1:-1])
    assert reports[-1].startswith("    ✅ done in")
