"""The database checks against a real database: schema, migrations, charsets, engines, session, clock."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.checks import ERROR, INFO, WARNING
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connection, connections

from core.db.features import identify_server
from diagnostics.checks import charsets, clock, database, registration, schema, timezones
from diagnostics.checks.clock import skew_result
from diagnostics.checks.database import session_mismatches
from diagnostics.tests.conftest import DEFAULT_DATABASE, by_id, check_production_json, execute, problems
from tasks.models import TaskQueue

mysql = pytest.mark.mysql


@pytest.fixture
def scratch_tables(db):
    """Names of tables a test creates in the test database; dropped afterwards, even on failure."""
    created: list[str] = []
    yield created
    for table in created:
        execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)}")


@mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("create_sql", "expected_id"),
    [
        (
            "CREATE TABLE diag_check_t (id INT PRIMARY KEY, body VARCHAR(50)) ENGINE=InnoDB CHARSET=latin1",
            "diagnostics.E041",
        ),
        (
            "CREATE TABLE diag_check_t (id INT PRIMARY KEY, body VARCHAR(50)) ENGINE=MyISAM CHARSET=utf8mb4 "
            "COLLATE=utf8mb4_unicode_ci",
            "diagnostics.E043",
        ),
        (
            "CREATE TABLE diag_check_t (id INT PRIMARY KEY, body VARCHAR(50) CHARACTER SET latin1) CHARSET=utf8mb4 "
            "COLLATE=utf8mb4_unicode_ci",
            "diagnostics.E042",
        ),
    ],
    ids=["latin1-table", "myisam-table", "latin1-column"],
)
def test_a_table_not_in_utf8mb4_or_innodb_fails_check_production(production, scratch_tables, create_sql, expected_id):
    scratch_tables.append("diag_check_t")
    execute(create_sql)
    code, document = check_production_json()
    assert (code, problems(document)) == (1, {expected_id: "error"})
    message = next(r["message"] for r in document["results"] if r["id"] == expected_id)
    assert "diag_check_t" in message


@mysql
@pytest.mark.django_db(transaction=True)
def test_a_latin1_database_default_is_an_error():
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    execute(f"ALTER DATABASE {name} CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    try:
        assert by_id(charsets.check_charsets(databases=DEFAULT_DATABASE)) == {"diagnostics.E040": ERROR}
    finally:
        execute(f"ALTER DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    assert by_id(charsets.check_charsets(databases=DEFAULT_DATABASE)) == {}


@mysql
@pytest.mark.django_db(transaction=True)
def test_a_dropped_foreign_key_fails_check_production(production):
    field = TaskQueue._meta.get_field("queue")
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "task_queue")
    [name] = [name for name, info in constraints.items() if info["foreign_key"] == ("queue_config", "id")]
    execute(f"ALTER TABLE task_queue DROP FOREIGN KEY {connection.ops.quote_name(name)}")
    try:
        code, document = check_production_json()
        assert (code, problems(document)) == (1, {"diagnostics.E047": "error"})
        assert "task_queue.queue_id → queue_config.id" in str(document)
    finally:
        with connection.schema_editor() as editor:
            editor.execute(editor._create_fk_sql(TaskQueue, field, "_fk_%(to_table)s_%(to_column)s"))
    assert by_id(schema.check_tables(databases=DEFAULT_DATABASE)) == {}


@pytest.mark.django_db(transaction=True)
def test_an_unapplied_migration_fails_check_production(production):
    call_command("migrate", "tasks", "0001", verbosity=0)
    try:
        code, document = check_production_json()
        statuses = problems(document)
        assert code == 1
        assert statuses["diagnostics.E050"] == "error"
        assert "tasks.0002_default_queue" in str(document)
    finally:
        call_command("migrate", "tasks", verbosity=0)
    assert "diagnostics.E050" not in problems(check_production_json()[1])


@pytest.mark.django_db(transaction=True)
def test_a_dropped_index_is_reported_by_name():
    index = next(index for index in TaskQueue._meta.indexes if index.name == "task_created_idx")
    with connection.schema_editor() as editor:
        editor.remove_index(TaskQueue, index)
    try:
        [result] = [r for r in schema.check_tables(databases=DEFAULT_DATABASE) if r.level > INFO]
        assert (result.id, result.level) == ("diagnostics.E046", ERROR)
        assert "task_queue lacks index(es)/constraint(s) task_created_idx" in result.msg
    finally:
        with connection.schema_editor() as editor:
            editor.add_index(TaskQueue, index)


@pytest.mark.django_db(transaction=True)
def test_a_missing_table_is_reported_and_a_failing_query_does_not_stop_the_other_checks(production):
    execute("ALTER TABLE diagnostics_instance RENAME TO diagnostics_instance_away")
    try:
        code, document = check_production_json()
    finally:
        execute("ALTER TABLE diagnostics_instance_away RENAME TO diagnostics_instance")
    statuses = problems(document)
    assert code == 1
    assert statuses["diagnostics.E044"] == "error"
    [failed] = [r for r in document["results"] if r["id"] == "diagnostics.E039"]
    assert failed["check"] == "fingerprints"  # it could not read its table, and said so
    assert {"migrations", "schema.tables", "database.connection"} <= {r["check"] for r in document["results"]}


@mysql
@pytest.mark.django_db
def test_session_variables_are_read_from_a_fresh_connection(monkeypatch):
    def session_findings():
        # Strict mode (mysql.W002) is Django's own check, relayed beside the session comparison.
        checks = (database.check_strict_mode, database.check_session_variables)
        return [message for check in checks for message in check(databases=DEFAULT_DATABASE)]

    assert by_id(session_findings()) == {}
    options = connection.settings_dict["OPTIONS"]
    monkeypatch.setitem(options, "init_command", "SET SESSION wait_timeout=1234, sql_mode='NO_ENGINE_SUBSTITUTION'")
    results = session_findings()
    assert by_id(results) == {"mysql.W002": WARNING, "diagnostics.E032": ERROR}
    [mismatch] = [r for r in results if r.id == "diagnostics.E032"]
    assert "wait_timeout is 1234, expected 3600" in mismatch.msg
    assert "sql_mode lacks" in mismatch.msg


def test_session_mismatches_compare_values_and_required_sql_modes():
    expected = {"wait_timeout": 3600, "sql_mode": "STRICT_TRANS_TABLES,NO_ZERO_DATE", "isolation": "READ-COMMITTED"}
    actual = {
        "wait_timeout": 3600,
        "sql_mode": "NO_ZERO_DATE,STRICT_TRANS_TABLES,ONLY_FULL_GROUP_BY",
        "isolation": "READ-COMMITTED",
    }
    assert session_mismatches(actual, expected) == []
    actual.update(isolation="REPEATABLE-READ", sql_mode="NO_ZERO_DATE")
    assert session_mismatches(actual, expected) == [
        "sql_mode lacks STRICT_TRANS_TABLES (it is 'NO_ZERO_DATE')",
        "isolation is REPEATABLE-READ, expected READ-COMMITTED",
    ]


@pytest.mark.parametrize(
    ("answer", "expected_id"),
    [
        ("10.5.20-MariaDB-log", "diagnostics.E031"),
        ("10.6.0-MariaDB", None),
        ("5.5.5-10.11.6-MariaDB-0+deb12u1", None),
        ("5.7.44-log", "diagnostics.E031"),
        ("8.0.0-dmr", "diagnostics.E031"),
        ("8.0.36", None),
        ("8.0.11-TiDB-v7.5.1", "diagnostics.E033"),
        ("5.7.25-TiDB-v6.5.0", "diagnostics.E033"),
    ],
)
@pytest.mark.django_db
def test_server_version_check_reads_select_version(monkeypatch, answer, expected_id):
    """The check goes by the server's own answer: TiDB names itself there, whatever version it claims."""
    monkeypatch.setattr(database, "read_identity", lambda conn: identify_server(answer))
    monkeypatch.setattr(registration, "_reachable", lambda: True)
    monkeypatch.setattr(connections[DEFAULT_DB_ALIAS], "vendor", "mysql")
    found = by_id(database.check_server_version(databases=DEFAULT_DATABASE))
    assert found == ({expected_id: ERROR} if expected_id else {})


@mysql
@pytest.mark.django_db
def test_this_server_version_is_supported():
    assert by_id(database.check_server_version(databases=DEFAULT_DATABASE)) == {}


@mysql
@pytest.mark.django_db
def test_a_slow_round_trip_is_a_warning(monkeypatch):
    monkeypatch.setattr(database, "SLOW_ROUND_TRIP_MS", -1.0)
    assert by_id(database.check_connection(databases=DEFAULT_DATABASE)) == {"diagnostics.W030": WARNING}


@mysql
@pytest.mark.django_db
@pytest.mark.parametrize(("offset", "expected"), [(-120, "diagnostics.E070"), (-5, "diagnostics.W070"), (0, None)])
def test_clock_skew_between_the_app_and_the_database_server(offset, expected):
    execute(f"SET SESSION timestamp = UNIX_TIMESTAMP() + {offset}")  # the server's clock, as this session sees it
    try:
        [result] = clock.check_clock_skew(databases=DEFAULT_DATABASE)
    finally:
        execute("SET SESSION timestamp = DEFAULT")
    assert (result.id or None) == expected
    assert offset == 0 or "behind this machine" in result.msg


def test_skew_is_judged_against_one_second_and_the_jwt_leeway():
    assert skew_result(0.3, leeway=30).level == INFO
    assert skew_result(-2.0, leeway=30).id == "diagnostics.W070"
    assert skew_result(31.0, leeway=30).id == "diagnostics.E070"
    assert "ahead of" in skew_result(31.0, leeway=30).msg


@mysql
# Not inside a test transaction: once it has read the (non-transactional) mysql.time_zone_name
# table, MariaDB refuses the SAVEPOINT each database check runs in.
@pytest.mark.django_db(transaction=True)
def test_time_zone_tables_are_needed_only_when_time_zone_differs_from_the_connection(settings):
    settings.TIME_ZONE = "UTC"
    assert timezones.time_zone_tables_needed() is False
    assert by_id(timezones.check_time_zone_tables(databases=DEFAULT_DATABASE)) == {}
    settings.TIME_ZONE = "Europe/Paris"
    assert timezones.time_zone_tables_needed() is True
    [(loaded,)] = execute("SELECT COUNT(*) FROM mysql.time_zone_name")
    expected = {} if loaded else {"diagnostics.E060": ERROR}
    assert by_id(timezones.check_time_zone_tables(databases=DEFAULT_DATABASE)) == expected
    settings.USE_TZ = False
    assert timezones.time_zone_tables_needed() is False


@mysql
@pytest.mark.django_db(transaction=True)
def test_tables_and_columns_in_another_collation_are_named_then_fix_mysql_converts_them(scratch_tables):
    scratch_tables += ["diag_general", "diag_column"]
    execute(
        "CREATE TABLE diag_general (id INT PRIMARY KEY, body VARCHAR(50)) CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
    )
    execute(
        "CREATE TABLE diag_column (id INT PRIMARY KEY, body VARCHAR(50) COLLATE utf8mb4_bin, doc JSON) "
        "CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )

    results = charsets.check_charsets(databases=DEFAULT_DATABASE)

    assert by_id(results) == {"diagnostics.E048": ERROR}
    message = results[0].msg
    assert "diag_general (utf8mb4_general_ci)" in message and "diag_column.body (utf8mb4_bin)" in message
    assert "diag_general.body" not in message  # the table is named, its columns go with it
    assert "task_queue" not in message and "diag_column.doc" not in message  # MariaDB's JSON is utf8mb4_bin

    call_command("fix_mysql", "--apply", stdout=StringIO())
    assert by_id(charsets.check_charsets(databases=DEFAULT_DATABASE)) == {}
    collations = execute(
        "SELECT DISTINCT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME IN ('diag_general', 'diag_column') AND COLLATION_NAME IS NOT NULL"
    )
    expected = {connection.settings_dict["TEST"]["COLLATION"]} | (
        {"utf8mb4_bin"} if connection.mysql_is_mariadb else set()
    )
    assert {collation for (collation,) in collations} == expected  # the JSON column keeps its binary collation
