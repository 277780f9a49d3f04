"""The deploy guides: every command is checked, every log marker and metric documented.

The variables are described in docs/CONFIGURATION.md, which config/tests/test_configuration_doc.py
checks against the code; the guides link to it.

Commands that can run here run here (or in test_deploy_files / test_deploy_live); the rest are
checked against the files they act on. A command no checker knows fails the test, so a guide
cannot grow an unchecked command.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection

from diagnostics.checks.secrets import is_placeholder
from diagnostics.health import HealthView, QueueHealthView
from diagnostics.tests import deploy_guide as guide
from diagnostics.tests.deploy_guide import BASE_DIR, GUIDES, INSTALL_DIR

ENGLISH, CHINESE = GUIDES
SYSTEMCTL_VERBS = {"daemon-reload", "enable", "start", "stop", "restart", "reload", "status"}
EXTERNAL_UNITS = {"nginx"}
# Checked for real elsewhere: the test that runs each.
RUN_ELSEWHERE = {
    "gunicorn": "test_deploy_files.test_gunicorn_accepts_the_configuration_with_the_guides_command",
    "systemd-analyze": "test_deploy_files.test_systemd_units_verify",
    "nginx": "test_deploy_files.test_nginx_accepts_the_configuration",
    "curl": "test_deploy_live",
}


def ensure_system_deps() -> str:
    return (BASE_DIR / "scripts" / "ensure-system-deps").read_text()


def web_unit() -> dict:
    return guide.unit_keys(guide.unit_file("taskhub-web"))


class Checker:
    """Check one simple command of the guides; `piped_from` is the command whose output it reads."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, words: list[str], piped_from: list[str] | None) -> None:
        words = guide.without_sudo(words)
        program = Path(words[0]).name
        if (arguments := guide.manage_py_arguments(words)) is not None:
            self.manage_py(arguments)
        elif program in RUN_ELSEWHERE:
            pass  # see RUN_ELSEWHERE
        else:
            method = getattr(self, program.replace("-", "_").replace(".", "_"), None)
            assert method is not None, f"no check for `{' '.join(words)}`: add one to {__name__}"
            method(words[1:], piped_from)
        self.checked.append(" ".join(words))

    def manage_py(self, arguments: list[str]) -> None:
        guide.parse_manage_py(arguments)

    def apt_get(self, args: list[str], piped_from) -> None:
        assert args[:2] == ["install", "-y"], args
        # CI installs the same packages (scripts/ensure-system-deps) on a machine with python3.
        for package in args[2:]:
            assert package in {"python3", "python3-venv"} or package in ensure_system_deps(), package

    def useradd(self, args: list[str], piped_from) -> None:
        service = web_unit()["Service"]
        assert args[-1] == service["User"][0]
        assert args[args.index("--home-dir") + 1] == service["WorkingDirectory"][0] == INSTALL_DIR

    def cd(self, args: list[str], piped_from) -> None:
        assert args == [INSTALL_DIR]

    def python3(self, args: list[str], piped_from) -> None:
        if args[:2] == ["-m", "venv"]:
            venv = args[2]
            assert f"{INSTALL_DIR}/{venv}/bin/gunicorn" in web_unit()["Service"]["ExecStart"][0]
            return
        assert args[0] == "-c", args
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=30, check=True)
        key = result.stdout.strip()
        assert len(key) >= 32 and not is_placeholder(key), "the guide's key generator must make a usable key"

    def pip(self, args: list[str], piped_from) -> None:
        assert args[:2] == ["install", "-r"] and (BASE_DIR / args[2]).is_file(), args

    def cp(self, args: list[str], piped_from) -> None:
        source, destination = args
        assert (BASE_DIR / source).is_file(), source
        if destination.startswith("/etc/systemd/system/"):
            assert source.startswith("deploy/") and source.endswith(".service")
        elif destination.startswith("/etc/nginx/"):
            assert source == "deploy/nginx.conf"
        else:
            assert (source, destination) == (".env.example", ".env")

    def chmod(self, args: list[str], piped_from) -> None:
        assert args == ["600", ".env"]
        assert ".env" in (BASE_DIR / ".gitignore").read_text().split()

    def systemctl(self, args: list[str], piped_from) -> None:
        verb, *rest = args
        assert verb in SYSTEMCTL_VERBS, verb
        units = [unit for unit in rest if not unit.startswith("-")]
        for unit in units:
            if unit in EXTERNAL_UNITS:
                continue
            path = guide.unit_file(unit)
            assert path.is_file(), f"no {path.name} in deploy/ for `systemctl {verb} {unit}`"
            if verb == "reload":
                assert "ExecReload" in guide.unit_keys(path)["Service"], f"{unit} cannot reload"
            if "@" in unit:
                assert unit.split("@")[1], f"a template needs an instance name: {unit}"

    def journalctl(self, args: list[str], piped_from) -> None:
        unit = args[args.index("-u") + 1]
        assert guide.unit_file(unit.replace("*", "x")).is_file(), unit

    def grep(self, args: list[str], piped_from: list[str] | None) -> None:
        pattern = args[-1]
        assert piped_from, "grep reads the output of the command before it"
        if Path(piped_from[0]).name == "journalctl":
            # What the guide tells operators to look for must be what the code logs.
            known = [part for parts in guide.log_markers().values() for part in parts]
            is_marker = len(pattern) >= 4 and any(pattern in part for part in known)
            assert is_marker or pattern.startswith("rid="), f"{pattern!r} is not a log marker"
            if pattern.startswith("rid="):
                assert "rid=%({x-request-id}o)s" in (BASE_DIR / "gunicorn.conf.py").read_text()
            return
        arguments = guide.manage_py_arguments(guide.without_sudo(piped_from))
        assert arguments and arguments[0] == "check_production", piped_from
        out = StringIO()
        try:
            call_command(*arguments, stdout=out)
        except CommandError:
            pass  # problems exit non-zero (no production database here); grep reads the output all the same
        assert re.search(pattern, out.getvalue()), f"`grep {pattern}` finds nothing in:\n{out.getvalue()}"


def test_both_guides_show_the_same_commands_sql_settings_and_output():
    for language in ("sh", "sql", "ini", "yaml", "text"):
        assert guide.fenced_blocks(ENGLISH, language) == guide.fenced_blocks(CHINESE, language), language
    assert guide.shell_commands(ENGLISH)


def test_both_guides_have_the_same_sections_and_name_the_same_things():
    english, chinese = (path.read_text() for path in GUIDES)
    headings = [[line.split()[0] for line in text.splitlines() if line.startswith("#")] for text in (english, chinese)]
    assert headings[0] == headings[1]
    spans = [set(re.findall(r"`([^`\n]+)`", text)) for text in (english, chinese)]
    assert spans[0] ^ spans[1] == set(), "the guides differ in what they quote"


def test_each_guide_links_the_other():
    assert "DEPLOY.zh-CN.md" in ENGLISH.read_text()
    assert "DEPLOY.md" in CHINESE.read_text()


@pytest.mark.django_db
def test_every_shell_command_of_the_guides_is_checked():
    checker = Checker()
    for command in guide.shell_commands(ENGLISH):
        piped_from = None
        for words, operator in guide.simple_commands(command):
            checker.check(words, piped_from)
            piped_from = words if operator == "|" else None
    programs = {Path(guide.without_sudo(c.split())[0]).name for c in checker.checked}
    # The checklist of the issue: each of these must be in the guides.
    assert {"python", "gunicorn", "systemctl", "systemd-analyze", "nginx", "curl", "journalctl"} <= programs
    manage = {c.split()[2] for c in checker.checked if " manage.py " in f" {c} "}
    assert {"check_production", "fix_mysql", "migrate", "run_worker", "compilemessages"} <= manage


def test_every_variable_settings_read_is_in_env_example():
    names = guide.settings_variables() | guide.process_variables()
    assert {"JWT_SECRET_KEY", "MYSQL_SQL_MODE", "GUNICORN_WORKERS", "PROMETHEUS_MULTIPROC_DIR"} <= names
    example = (BASE_DIR / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", example, re.M))
    assert names - listed == set(), "variables missing from .env.example"


def test_both_guides_link_the_configuration_page():
    for path in GUIDES:
        assert "(CONFIGURATION.md)" in path.read_text(), path.name


def test_every_variable_in_env_example_has_a_comment_and_is_read_somewhere():
    names = guide.settings_variables() | guide.process_variables()
    variable = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]+)=")
    explained = False  # a comment line above this group of variables (a blank line ends a group)
    for line in (BASE_DIR / ".env.example").read_text().splitlines():
        if match := variable.match(line):
            assert match.group(1) in names, f".env.example lists {match.group(1)}, which nothing reads"
            assert explained, f"{match.group(1)} has no comment above it"
        else:
            explained = line.startswith("#") and not line.startswith("# ---")


def test_every_log_marker_is_in_both_guides_verbatim():
    markers = guide.log_markers()
    assert {"❌ Token验证失败", "⚠️ 用户认证耗时过长", "✅ MySQL会话优化完成", "❌ MySQL会话设置未生效"} <= set(markers)
    assert any(marker.startswith("❌ 数据库会话错误 [") for marker in markers)
    for path in GUIDES:
        text = path.read_text()
        for marker, parts in markers.items():
            assert all(part in text for part in parts), f"{path.name} lacks the marker {marker!r}"


def test_every_metric_series_and_health_check_is_in_both_guides():
    series = guide.metric_names()
    assert "taskhub_db_forced_rollbacks_total" in series and "taskhub_queue_tasks" in series
    checks = {name.rsplit(".", 1)[1] for name in (*HealthView.checks, *QueueHealthView.checks)}
    for path in GUIDES:
        text = path.read_text()
        assert {name for name in series if f"`{name}`" not in text} == set(), path.name
        assert {name for name in checks if f"`{name}`" not in text} == set(), path.name


def test_the_prometheus_example_scrapes_metrics_with_the_token():
    (block,) = guide.fenced_blocks(ENGLISH, "yaml")
    (job,) = yaml.safe_load(block)["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and "METRICS_TOKEN" in job["authorization"]["credentials"]


@pytest.mark.django_db
def test_the_mysql_settings_name_real_options_and_the_same_sql_mode_as_taskhub(settings):
    parser = configparser.ConfigParser()
    parser.read_string(guide.fenced_blocks(ENGLISH, "ini")[0])
    options = dict(parser["mysqld"])
    assert options["sql_mode"] == settings.MYSQL_SQL_MODE
    assert int(options["wait_timeout"]) > 60  # above DB_CONN_MAX_AGE's default
    if connection.vendor != "mysql":
        return
    with connection.cursor() as cursor:
        for name in options:
            cursor.execute("SHOW GLOBAL VARIABLES LIKE %s", [name])
            assert cursor.fetchone(), f"the server has no variable {name}"


@pytest.mark.mysql
@pytest.mark.django_db
def test_the_sql_of_the_guides_parses_on_the_server():
    """PREPARE parses a statement without running it: a dry run of CREATE DATABASE/USER and GRANT."""
    statements = [s.strip() for s in guide.fenced_blocks(ENGLISH, "sql")[0].split(";") if s.strip()]
    assert len(statements) == 3
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute("PREPARE taskhub_guide_check FROM %s", [statement])
            cursor.execute("DEALLOCATE PREPARE taskhub_guide_check")
