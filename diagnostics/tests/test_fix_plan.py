"""fix_mysql's plan is a pure function of a snapshot: order, SQL, skips and globals."""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.core.management import CommandError, call_command

from diagnostics.fixes.plan import build_plan, plan_globals
from diagnostics.fixes.snapshot import Column, Index, MissingForeignKey, Snapshot, Table

GOOD_GLOBALS = {
    "innodb_buffer_pool_size": str(512 * 1024 * 1024),
    "max_connections": "200",
    "wait_timeout": "28800",
    "interactive_timeout": "28800",
    "sql_mode": "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
}
SQL_MODE = "STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def text(name: str, chars: int = 50, charset: str | None = "latin1", data_type: str = "varchar") -> Column:
    return Column(name, data_type, charset, chars)


def table(name: str, *, engine="InnoDB", charset="utf8mb4", columns=None, indexes=(), **fields) -> Table:
    collation = {"utf8mb4": "utf8mb4_unicode_ci", "latin1": "latin1_swedish_ci"}.get(charset, f"{charset}_general_ci")
    columns = columns if columns is not None else (Column("id", "int", None), text("body", charset=charset))
    return Table(
        name, engine, collation, fields.pop("row_format", "dynamic"), fields.pop("rows", 3), columns, indexes, **fields
    )


def snapshot(*tables: Table, **fields) -> Snapshot:
    defaults = {
        "database": "taskhub",
        "charset": "utf8mb4",
        "collation": "utf8mb4_unicode_ci",
        "server": "MariaDB 10.11.19",
        "tables": tables,
        "global_variables": dict(GOOD_GLOBALS),
        "can_set_globals": True,
        "account": "taskhub@%",
        "charset_maxlen": {"latin1": 1, "ascii": 1, "utf8mb3": 3, "utf8mb4": 4},
    }
    return Snapshot(**{**defaults, **fields})


def kinds(plan) -> list[tuple[str, str]]:
    return [(fix.kind, fix.target) for fix in plan.fixes]


def test_a_clean_database_needs_nothing():
    plan = build_plan(snapshot(table("task_queue"), table("queue_config")), set_globals=True, sql_mode=SQL_MODE)
    assert plan.nothing_to_do
    assert (plan.skipped, plan.notes) == ((), ())


def test_a_latin1_myisam_table_is_moved_to_innodb_before_its_charset_is_converted():
    plan = build_plan(snapshot(table("legacy", engine="MyISAM", charset="latin1", rows=1200)))
    assert [fix.sql for fix in plan.fixes] == [
        ("ALTER TABLE `legacy` ENGINE=InnoDB",),
        ("ALTER TABLE `legacy` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",),
    ]
    assert all(fix.rows == 1200 and fix.reason for fix in plan.fixes)


def test_the_database_default_comes_first():
    plan = build_plan(snapshot(table("legacy", charset="latin1"), charset="latin1", collation="latin1_swedish_ci"))
    assert plan.fixes[0].sql == ("ALTER DATABASE `taskhub` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",)
    assert kinds(plan) == [("database", "taskhub"), ("charset", "legacy")]


def test_a_utf8mb4_table_with_one_latin1_column_is_converted():
    columns = (Column("id", "int", None), text("body", charset="utf8mb4"), text("note", charset="latin1"))
    plan = build_plan(snapshot(table("mixed", columns=columns)))
    assert kinds(plan) == [("charset", "mixed")]


def test_parents_are_converted_before_the_tables_that_reference_them():
    child = table("a_child", charset="latin1", references=("z_parent",))
    parent = table("z_parent", charset="latin1")
    assert kinds(build_plan(snapshot(child, parent))) == [("charset", "z_parent"), ("charset", "a_child")]


def test_an_index_too_long_in_utf8mb4_skips_the_table_with_the_reason():
    wide = table(
        "wide",
        charset="latin1",
        columns=(Column("id", "int", None), text("name", 1000)),
        indexes=(Index("PRIMARY", "BTREE", (("id", None),)), Index("name_idx", "BTREE", (("name", None),))),
    )
    plan = build_plan(snapshot(wide))
    assert plan.nothing_to_do
    [skip] = plan.skipped
    assert skip.target == "wide"
    assert "index name_idx would need 4000 bytes" in skip.reason
    assert "3072-byte limit" in skip.reason


def test_a_prefix_index_and_a_fulltext_index_fit():
    table_ = table(
        "prefixed",
        charset="latin1",
        columns=(Column("id", "int", None), text("name", 1000), text("body", None, data_type="text")),
        indexes=(Index("name_idx", "BTREE", (("name", 191),)), Index("body_ft", "FULLTEXT", (("body", None),))),
    )
    assert kinds(build_plan(snapshot(table_))) == [("charset", "prefixed")]


def test_old_row_formats_limit_each_key_column_to_767_bytes():
    columns = (Column("id", "int", None), text("name", 200))
    indexes = (Index("name_idx", "BTREE", (("name", None),)),)
    compact = table("old", charset="latin1", columns=columns, indexes=indexes, row_format="compact")
    plan = build_plan(snapshot(compact))
    assert "800 bytes" in plan.skipped[0].reason and "767-byte limit" in plan.skipped[0].reason
    assert kinds(build_plan(snapshot(replace(compact, row_format="dynamic")))) == [("charset", "old")]


def test_a_composite_key_is_limited_as_a_whole():
    columns = (text("a", 500), text("b", 300))
    indexes = (Index("ab_idx", "BTREE", (("a", None), ("b", None))),)
    plan = build_plan(snapshot(table("pair", charset="latin1", columns=columns, indexes=indexes)))
    assert "index ab_idx would need 3200 bytes" in plan.skipped[0].reason


def test_text_that_would_not_survive_conversion_skips_the_table():
    plan = build_plan(
        snapshot(table("raw", charset="latin1", columns=(text("t", charset="ascii"),), lossy_columns=("t",)))
    )
    assert plan.nothing_to_do
    assert "column(s) t (ascii) hold bytes that are not valid text" in plan.skipped[0].reason


def test_rows_too_wide_in_utf8mb4_skip_the_table():
    plan = build_plan(snapshot(table("huge", charset="latin1", columns=(text("blob", 20000),))))
    assert "over MySQL's 65535-byte row limit" in plan.skipped[0].reason


def test_a_table_that_cannot_move_to_innodb_is_not_converted_either():
    columns = (Column("id", "int", None), text("name", 800))
    indexes = (Index("name_idx", "BTREE", (("name", None),)),)
    myisam = table("stuck", engine="MyISAM", charset="latin1", columns=columns, indexes=indexes)
    plan = build_plan(snapshot(myisam, default_row_format="compact"))
    assert plan.nothing_to_do
    assert [skip.reason.split(":")[0] for skip in plan.skipped] == [
        "not moved to InnoDB",
        "not converted to utf8mb4 either",
    ]


def missing_fk(orphans: int = 0) -> MissingForeignKey:
    sql = "ALTER TABLE `task_queue` ADD CONSTRAINT `fk` FOREIGN KEY (`queue_id`) REFERENCES `queue_config` (`id`)"
    return MissingForeignKey("task_queue", "task_queue.queue_id → queue_config.id", "queue_config", sql, orphans)


def test_a_missing_foreign_key_is_added_after_its_tables_are_innodb():
    tables = (table("task_queue", engine="MyISAM"), table("queue_config", engine="MyISAM"))
    plan = build_plan(snapshot(*tables, missing_foreign_keys=(missing_fk(),)))
    assert kinds(plan) == [("engine", "queue_config"), ("engine", "task_queue"), ("foreign_key", "task_queue")]
    assert plan.fixes[-1].sql == (missing_fk().sql,)


def test_a_foreign_key_with_orphan_rows_is_skipped():
    plan = build_plan(snapshot(table("task_queue"), table("queue_config"), missing_foreign_keys=(missing_fk(3),)))
    assert plan.nothing_to_do
    assert "3 row(s) point at rows that do not exist" in plan.skipped[0].reason


def test_a_foreign_key_to_a_table_left_on_myisam_is_skipped():
    columns = (Column("id", "int", None), text("name", 800, charset="utf8mb4"))
    stuck = table("queue_config", engine="MyISAM", columns=columns, indexes=(Index("n", "BTREE", (("name", None),)),))
    plan = build_plan(
        snapshot(table("task_queue"), stuck, missing_foreign_keys=(missing_fk(),), default_row_format="compact")
    )
    assert kinds(plan) == []
    assert any("both tables must be InnoDB" in skip.reason for skip in plan.skipped)


LOW_GLOBALS = {
    "innodb_buffer_pool_size": str(128 * 1024 * 1024),
    "max_connections": "100",
    "wait_timeout": "600",
    "interactive_timeout": "600",
    "sql_mode": "NO_ENGINE_SUBSTITUTION",
}


def test_recommended_globals_are_planned_only_with_set_globals():
    low = snapshot(global_variables=LOW_GLOBALS)
    plan = build_plan(low, sql_mode=SQL_MODE)
    assert plan.nothing_to_do
    assert "run with --set-globals" in plan.notes[0]
    plan = build_plan(low, set_globals=True, sql_mode=SQL_MODE)
    assert [fix.sql[0] for fix in plan.fixes] == [
        "SET GLOBAL innodb_buffer_pool_size = 268435456",
        "SET GLOBAL max_connections = 150",
        "SET GLOBAL wait_timeout = 28800",
        "SET GLOBAL interactive_timeout = 28800",
        f"SET GLOBAL sql_mode = '{SQL_MODE}'",
    ]
    assert "my.cnf" in plan.notes[0]


def test_larger_values_are_never_lowered():
    fixes, skips = plan_globals(snapshot(), sql_mode=SQL_MODE)
    assert (fixes, skips) == ([], [])


def test_without_the_privilege_each_global_is_skipped_with_the_sql_for_a_dba():
    fixes, skips = plan_globals(snapshot(global_variables=LOW_GLOBALS, can_set_globals=False), sql_mode=SQL_MODE)
    assert fixes == []
    assert len(skips) == 5
    assert all("needs the SUPER privilege" in skip.reason and "taskhub@%" in skip.reason for skip in skips)
    assert "SET GLOBAL max_connections = 150" in skips[1].reason


def test_a_buffer_pool_that_is_not_dynamic_is_left_to_my_cnf():
    fixes, skips = plan_globals(snapshot(global_variables=LOW_GLOBALS, buffer_pool_dynamic=False), sql_mode=SQL_MODE)
    assert [skip.target for skip in skips] == ["innodb_buffer_pool_size"]
    assert "set it in my.cnf and restart" in skips[0].reason
    assert len(fixes) == 4


@pytest.mark.sqlite
@pytest.mark.django_db
def test_fix_mysql_refuses_to_run_on_sqlite():
    with pytest.raises(CommandError, match="works on MySQL/MariaDB; the configured database is sqlite"):
        call_command("fix_mysql", "--apply")


# --- One collation everywhere ---------------------------------------------------------------------


def collated(name: str, collation: str, *columns: Column) -> Table:
    return replace(table(name, columns=columns or (Column("id", "int", None),)), collation=collation)


def test_tables_in_another_utf8mb4_collation_are_converted_to_the_databases():
    plan = build_plan(
        snapshot(
            collated("task_queue", "utf8mb4_unicode_ci"),
            collated("auth_user", "utf8mb4_general_ci"),
            target_collation="utf8mb4_unicode_ci",
        )
    )
    assert kinds(plan) == [("collation", "auth_user")]
    assert plan.fixes[0].sql == ("ALTER TABLE `auth_user` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",)
    assert "utf8mb4_general_ci" in plan.fixes[0].reason and "1267" in plan.fixes[0].reason


def test_a_column_in_another_collation_is_converted_with_its_table():
    odd = Column("name", "varchar", "utf8mb4", 20, collation="utf8mb4_bin")
    plan = build_plan(snapshot(collated("queue_config", "utf8mb4_unicode_ci", odd)))
    assert kinds(plan) == [("collation", "queue_config")]
    assert "name utf8mb4_bin" in plan.fixes[0].reason


def test_the_target_collation_is_the_database_default_and_the_database_follows_it():
    plan = build_plan(
        snapshot(
            collated("task_queue", "utf8mb4_unicode_ci"),
            collation="utf8mb4_unicode_ci",
            target_collation="utf8mb4_0900_ai_ci",  # MYSQL_COLLATION on MySQL 8
        )
    )
    assert kinds(plan) == [("database", "taskhub"), ("collation", "task_queue")]
    assert plan.fixes[0].sql == ("ALTER DATABASE `taskhub` CHARACTER SET utf8mb4 COLLATE utf8mb4_0900_ai_ci",)


def test_latin1_tables_are_converted_to_the_target_collation():
    plan = build_plan(snapshot(table("legacy", charset="latin1"), target_collation="utf8mb4_general_ci"))
    assert plan.fixes[-1].sql == ("ALTER TABLE `legacy` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",)
