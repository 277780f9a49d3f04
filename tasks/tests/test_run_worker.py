"""`manage.py run_worker`: it checks its arguments, then builds a Worker and runs it."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from core.db.features import UnsupportedDatabase
from tasks.models import WorkerProcess
from tasks.worker import db as worker_db

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_worker_refuses_unknown_queues(default_queue):
    with pytest.raises(CommandError, match="Unknown queue.*nope.*Known queues: default"):
        call_command("run_worker", "--queue", "nope", "--burst")


@pytest.mark.parametrize("args", [["--concurrency", "0"], ["--max-tasks", "-1"], ["--poll-interval", "nan"]])
def test_run_worker_refuses_bad_numbers(args):
    with pytest.raises(CommandError, match="must be"):
        call_command("run_worker", *args)


def test_run_worker_refuses_a_server_without_skip_locked(monkeypatch, default_queue):
    def old_server(connection) -> None:
        raise UnsupportedDatabase("MariaDB 10.5.1 has no SELECT ... FOR UPDATE SKIP LOCKED")

    monkeypatch.setattr(worker_db, "ensure_skip_locked", old_server)
    with pytest.raises(CommandError, match="SKIP LOCKED"):
        call_command("run_worker", "--burst")
    assert not WorkerProcess.objects.exists()
