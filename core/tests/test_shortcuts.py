"""TASKHUB_SHORTCUTS: which shortcuts are on, decided in one place and once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import shortcuts

BASE_DIR = Path(__file__).resolve().parents[2]


def test_all_and_none_name_every_shortcut_or_none():
    assert shortcuts.parse("all") == frozenset(shortcuts.SHORTCUTS)
    assert shortcuts.parse(" ALL ") == frozenset(shortcuts.SHORTCUTS)
    assert shortcuts.parse("none") == frozenset()
    assert shortcuts.parse("") == frozenset()


def test_a_list_turns_on_exactly_the_named_shortcuts():
    assert shortcuts.parse("user_lookup, raw_task_sql") == {"user_lookup", "raw_task_sql"}


def test_a_retired_name_is_accepted_and_turns_nothing_on():
    """An upgrade that retires a shortcut must not stop a process whose settings still name it."""
    assert shortcuts.parse("me_serializer, raw_task_sql") == {"raw_task_sql"}
    assert shortcuts.parse("reply_flags") == frozenset()
    assert not shortcuts.RETIRED & set(shortcuts.SHORTCUTS)


def test_an_unknown_name_is_refused_naming_the_valid_ones():
    with pytest.raises(ImproperlyConfigured) as refused:
        shortcuts.parse("user_lookup,user_lookups")
    message = str(refused.value)
    assert "unknown shortcuts user_lookups;" in message
    for name in shortcuts.SHORTCUTS:
        assert name in message


def test_every_shortcut_names_its_module_and_the_module_of_its_plain_version():
    for name, (module, plain) in shortcuts.SHORTCUTS.items():
        assert (BASE_DIR / module).is_file(), name
        for path in plain.split(", "):
            assert (BASE_DIR / path).is_file(), name


def test_the_setting_decides_what_is_on():
    for name in shortcuts.SHORTCUTS:
        assert shortcuts.enabled(name) == (name in settings.TASKHUB_SHORTCUTS)


def test_a_call_site_chooses_once_and_again_only_under_an_override():
    calls = []

    @shortcuts.chosen
    def choice() -> bool:
        calls.append(1)
        return shortcuts.enabled("user_lookup")

    configured = choice()
    assert choice() == configured and len(calls) == 1
    with shortcuts.override({"user_lookup"} if not configured else set()):
        assert choice() is not configured
    assert choice() == configured and len(calls) == 3


def test_an_unknown_name_in_code_is_a_bug():
    with pytest.raises(ValueError):
        shortcuts.enabled("no_such_shortcut")
    with pytest.raises(ValueError), shortcuts.override({"no_such_shortcut"}):
        pass


def _start(value: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "TASKHUB_VAR_DIR": str(tmp_path),
        "TASKHUB_READ_DOTENV": "0",
        "JWT_SECRET_KEY": "j" * 40,
        "DJANGO_SECRET_KEY": "d" * 50,
        **({"TASKHUB_SHORTCUTS": value} if value is not None else {}),
    }
    code = "import django; django.setup(); from django.conf import settings; print(sorted(settings.TASKHUB_SHORTCUTS))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def test_start_up_stops_on_an_unknown_name(tmp_path):
    started = _start("user_lookup,no_such_shortcut", tmp_path)
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr and "no_such_shortcut" in started.stderr
    assert all(name in started.stderr for name in shortcuts.SHORTCUTS)


def test_every_shortcut_is_on_unless_told_otherwise(tmp_path):
    started = _start(None, tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == str(sorted(shortcuts.SHORTCUTS))
