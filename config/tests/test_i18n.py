"""API messages follow Accept-Language (English, Simplified Chinese); codes never change.

The catalogue is `locale/zh_Hans/LC_MESSAGES/django.po`; its `.mo` is compiled by
`manage.py compilemessages` (make, scripts/test, the deploy steps), never committed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tasks.models import QueueConfig

BASE_DIR = Path(settings.BASE_DIR)
CATALOGUE = BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MAKEMESSAGES = [
    *("makemessages", "-l", "zh_Hans", "--add-location", "file"),
    *("--ignore", "tests", "--ignore", "bench", "--ignore", "var", "--ignore", "test-artifacts"),
]
SOURCES = ("accounts", "config", "core", "diagnostics", "tasks", "templates", "manage.py")

ENGLISH = ("en", "en-US")
CHINESE = ("zh-hans", "zh-CN", "zh-Hans-CN")


@pytest.fixture
def alice_client(client_for, alice):
    return client_for(alice)


def answers(client, method: str, path: str, **extra) -> dict[str, tuple[int, dict]]:
    """Return {Accept-Language: (status, body)} for the same request in every language."""
    result = {}
    for language in ENGLISH + CHINESE:
        response = getattr(client, method)(path, HTTP_ACCEPT_LANGUAGE=language, **extra)
        result[language] = (response.status_code, response.json())
    return result


def assert_translated(result: dict[str, tuple[int, dict]], english: str, chinese: str) -> None:
    statuses = {status for status, _ in result.values()}
    codes = {body["code"] for _, body in result.values()}
    assert len(statuses) == 1 and len(codes) == 1, result  # clients act on codes: one per error
    for language, (_, body) in result.items():
        assert body["detail"] == (english if language in ENGLISH else chinese), (language, body)


@pytest.mark.django_db
def test_an_invalid_token_is_refused_in_the_callers_language(api_client):
    result = answers(api_client, "get", "/api/tasks/statistics", HTTP_AUTHORIZATION="Bearer invalid-token")
    assert result["en"][0] == 401 and result["en"][1]["code"] == "token_invalid"
    assert_translated(result, "The token is not valid.", "令牌无效。")


@pytest.mark.django_db
def test_a_missing_token_is_refused_in_the_callers_language(api_client):
    result = answers(api_client, "get", "/api/tasks/statistics")
    assert result["zh-CN"][0] == 401 and result["zh-CN"][1]["code"] == "token_missing"
    assert_translated(result, "Authentication credentials were not provided.", "未提供身份认证凭据。")


@pytest.mark.django_db
def test_taskhub_validation_messages_are_translated(alice_client, default_queue):
    result = answers(alice_client, "post", "/api/tasks/", data={"task_type": "echo", "queue": "nope"}, format="json")
    assert result["en"][0] == 400 and result["en"][1]["code"] == "invalid"
    assert_translated(result, "queue: Unknown queue 'nope'.", "queue: 未知的队列 'nope'。")
    assert result["zh-hans"][1]["errors"] == {"queue": ["未知的队列 'nope'。"]}


@pytest.mark.django_db
def test_framework_validation_messages_are_translated_too(alice_client, default_queue):
    body = {"task_type": "echo", "priority": 500}
    result = answers(alice_client, "post", "/api/tasks/", data=body, format="json")
    assert result["en"][0] == 400
    # DRF's own catalogue supplies this one.
    assert_translated(
        result, "priority: Ensure this value is less than or equal to 100.", "priority: 请确保该值小于或者等于 100。"
    )


@pytest.mark.django_db
def test_a_missing_task_is_a_translated_404(alice_client):
    result = answers(alice_client, "get", "/api/tasks/987654/")
    assert result["en"] == (404, {"detail": "Task 987654 not found.", "code": "not_found"})
    assert_translated(result, "Task 987654 not found.", "未找到任务 987654。")


@pytest.mark.django_db
def test_an_unknown_url_is_a_translated_404(api_client):
    assert_translated(answers(api_client, "get", "/api/no-such-thing/"), "Not found.", "未找到。")


@pytest.mark.django_db
def test_a_refused_state_change_is_translated(alice_client, alice):
    queue = QueueConfig.objects.get_or_create(name="default")[0]
    from tasks.tests.factories import make_task

    task = make_task(alice, queue=queue)
    result = answers(alice_client, "post", f"/api/tasks/{task.pk}/retry/")
    assert result["en"][0] == 409 and result["en"][1]["status"] == "pending"
    assert_translated(
        result,
        f"task {task.pk} is pending; only failed or cancelled tasks can be retried",
        f"任务 {task.pk} 状态为 pending；只有失败或已取消的任务可以重试",
    )


def test_responses_say_which_language_they_are_in(client):
    response = client.get("/health/live", HTTP_ACCEPT_LANGUAGE="zh-CN")
    assert response["Content-Language"] == "zh-hans"
    assert "Accept-Language" in response["Vary"]


# --- The catalogue --------------------------------------------------------------------------


def msgids(po_file: Path) -> set[str]:
    """Return the msgids of a .po file (singular forms; the header's empty id left out)."""
    ids, current, reading = set(), [], False
    for line in po_file.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("msgid "):
            current, reading = [line[6:]], True
        elif line.startswith('"') and reading:
            current.append(line)
        elif reading:
            reading = False
            text = "".join(part.strip()[1:-1] for part in current)
            if text:
                ids.add(text.encode().decode("unicode_escape").encode("latin-1").decode("utf-8"))
    return ids


def test_every_message_in_the_catalogue_is_translated_and_well_formed():
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(CATALOGUE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


def test_every_string_marked_for_translation_is_in_the_catalogue(tmp_path):
    """Regenerate the catalogue from a copy of the code and compare: new strings need a translation."""
    for name in SOURCES:
        source = BASE_DIR / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        else:
            shutil.copy(source, tmp_path / name)
    (tmp_path / "locale").mkdir()
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings_test", "TASKHUB_READ_DOTENV": "0"}
    subprocess.run(
        [sys.executable, "manage.py", *MAKEMESSAGES],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = msgids(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po")
    committed = msgids(CATALOGUE)
    assert fresh - committed == set(), (
        f"strings without a Chinese translation: run `.venv/bin/python manage.py {' '.join(MAKEMESSAGES)}` "
        "(with DJANGO_SETTINGS_MODULE=config.settings_test) and translate the new entries of "
        "locale/zh_Hans/LC_MESSAGES/django.po"
    )
    assert committed - fresh == set(), "entries no longer used: run makemessages (above) to drop them"
