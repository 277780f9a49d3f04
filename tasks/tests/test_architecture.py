"""One home for task state: only `tasks.transitions` writes a task's status, claim or lease, or the counters.

Its `raw_task_sql` shortcut module, `tasks.fast_sql`, holds hand-written versions of some of those
writes; it may contain them, but only the state machine may call them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
PRODUCT = ("config", "core", "accounts", "tasks", "diagnostics")
STATE_MACHINE = "tasks/transitions.py"
FAST_SQL = "tasks/fast_sql.py"
# The modules whose code may write task state: the state machine and the shortcut module beside it.
TASK_WRITERS = {STATE_MACHINE, FAST_SQL}
# What other modules may take from tasks.fast_sql: nothing that writes.
FAST_SQL_READ_NAMES = {"queues_named"}
# The command that recomputes the counters from scratch is their other legitimate user.
COUNTER_USERS = {STATE_MACHINE, "tasks/management/commands/rebuild_task_stats.py"}
STATE_FIELDS = {"status", "attempts", "claimed_by", "lease_expires_at"}
# What readers may take from tasks.counters: nothing that writes.
# The hour rollup (tasks.hour_stats) takes the minute columns, the retention and the upsert clause.
COUNTER_READ_NAMES = {"hour_of", "HOURLY_EVENT_COLUMNS", "MINUTE_EVENT_COLUMNS", "minute_stats_since", "upsert_clause"}
# The failure groups' writing functions, like the counters, belong to the state machine's transactions.
FAILURE_GROUP_WRITES = {"record_failed", "record_left"}
TASK_TABLE_WRITE = re.compile(r"\b(UPDATE\s+task_queue|INSERT\s+INTO\s+task_queue|DELETE\s+FROM\s+task_queue)\b", re.I)


def product_modules() -> dict[str, ast.Module]:
    modules = {}
    for package in PRODUCT:
        for path in sorted((BASE_DIR / package).rglob("*.py")):
            relative = path.relative_to(BASE_DIR).as_posix()
            if "/tests/" in relative or "/migrations/" in relative:
                continue
            modules[relative] = ast.parse(path.read_text(), filename=relative)
    return modules


def imports_counters(tree: ast.Module) -> bool:
    """Return True when the module imports the counters' writing functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.module == "tasks.counters" and {alias.name for alias in node.names} - COUNTER_READ_NAMES:
                return True
            if node.module == "tasks" and any(alias.name == "counters" for alias in node.names):
                return True
        if isinstance(node, ast.Import) and any(alias.name == "tasks.counters" for alias in node.names):
            return True
    return False


def state_updates(tree: ast.Module) -> list[int]:
    """Return the lines of `.update(...)` calls that set a task state field."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            if STATE_FIELDS & {keyword.arg for keyword in node.keywords}:
                lines.append(node.lineno)
    return lines


def task_table_sql(tree: ast.Module) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and TASK_TABLE_WRITE.search(node.value)
    ]


def fast_sql_writes_used(tree: ast.Module) -> list[int]:
    """Return the lines that import or call a writing function of tasks.fast_sql."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "tasks.fast_sql":
            if {alias.name for alias in node.names} - FAST_SQL_READ_NAMES:
                lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "fast_sql":
            if node.attr not in FAST_SQL_READ_NAMES:
                lines.append(node.lineno)
    return lines


def failure_group_writes_used(tree: ast.Module) -> list[int]:
    """Return the lines that import or call a writing function of tasks.failure_groups."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "tasks.failure_groups":
            if {alias.name for alias in node.names} & FAILURE_GROUP_WRITES:
                lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "failure_groups":
            if node.attr in FAILURE_GROUP_WRITES:
                lines.append(node.lineno)
    return lines


def test_only_the_state_machine_writes_the_failure_groups():
    modules = product_modules()
    offenders = {
        path: lines
        for path, tree in modules.items()
        if path not in {STATE_MACHINE, "tasks/failure_groups.py"} and (lines := failure_group_writes_used(tree))
    }
    assert offenders == {}
    assert failure_group_writes_used(modules[STATE_MACHINE]), "the state machine should be the one calling them"


def test_only_the_state_machine_imports_the_counters():
    offenders = sorted(path for path, tree in product_modules().items() if imports_counters(tree))
    assert set(offenders) <= COUNTER_USERS, offenders


def test_only_the_state_machine_updates_a_tasks_status_claim_or_lease():
    offenders = {
        path: lines
        for path, tree in product_modules().items()
        if path not in TASK_WRITERS and (lines := state_updates(tree))
    }
    assert offenders == {}


def test_only_the_state_machine_writes_task_queue_in_sql():
    offenders = {
        path: lines
        for path, tree in product_modules().items()
        if path not in TASK_WRITERS and (lines := task_table_sql(tree))
    }
    assert offenders == {}


def test_only_the_state_machine_calls_the_hand_written_writes():
    modules = product_modules()
    offenders = {
        path: lines
        for path, tree in modules.items()
        if path not in TASK_WRITERS and (lines := fast_sql_writes_used(tree))
    }
    assert offenders == {}
    assert fast_sql_writes_used(modules[STATE_MACHINE]), "the state machine should be the one calling them"
    assert task_table_sql(modules[FAST_SQL]), "the shortcut module should hold the task writes this test lets through"


def test_the_checks_see_a_write_when_there_is_one():
    """The scanners themselves: a module with each kind of write is caught."""
    tree = ast.parse(
        "from tasks import counters\n"
        "TaskQueue.objects.filter(pk=1).update(status='failed')\n"
        "cursor.execute('UPDATE task_queue SET status = %s')\n"
        "from tasks.fast_sql import succeed\n"
        "fast_sql.mark_running([1], worker_id='w', now=now, lease_expires_at=now)\n"
        "fast_sql.queues_named({'default'}, ('id',))\n"
    )
    assert imports_counters(tree)
    assert state_updates(tree) == [2]
    assert task_table_sql(tree) == [3]
    assert fast_sql_writes_used(tree) == [4, 5]
