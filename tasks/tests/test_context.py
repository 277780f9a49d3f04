"""The handler's context: progress goes out throttled and bounded, cancellation is a cheap flag."""

from __future__ import annotations

import pytest

from tasks import context as context_module
from tasks.context import WorkerTaskContext


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []
        self.cancelled: set[int] = set()
        self.cancel_checks = 0

    def send(self, task_id: int, percent: int, message: str) -> None:
        self.sent.append((task_id, percent, message))

    def is_cancelled(self, task_id: int) -> bool:
        self.cancel_checks += 1
        return task_id in self.cancelled


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(context_module.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def ctx(recorder) -> WorkerTaskContext:
    return WorkerTaskContext(
        task_id=7, attempt=2, worker_id="w", send_progress=recorder.send, is_cancelled=recorder.is_cancelled
    )


def test_it_exposes_the_task_and_attempt(ctx):
    assert (ctx.task_id, ctx.attempt, ctx.worker_id) == (7, 2, "w")


def test_progress_in_a_tight_loop_is_throttled_but_the_latest_gets_out(ctx, recorder, clock):
    for percent in range(50):
        ctx.set_progress(percent, f"step {percent}")
    assert recorder.sent == [(7, 0, "step 0")]
    clock[0] += context_module.PROGRESS_SEND_INTERVAL
    assert ctx.cancel_requested is False  # any later call sends what the throttle held back
    assert recorder.sent[-1] == (7, 49, "step 49")


def test_reaching_100_is_sent_at_once_and_repeats_are_not(ctx, recorder, clock):
    ctx.set_progress(10)
    ctx.set_progress(100, "done")
    ctx.set_progress(100, "done")
    assert recorder.sent == [(7, 10, ""), (7, 100, "done")]


def test_progress_is_clamped_and_its_message_bounded(ctx, recorder, clock):
    ctx.set_progress(250, "x" * 1000)
    clock[0] += 1
    ctx.set_progress(-3.7)
    assert recorder.sent[0] == (7, 100, "x" * context_module.PROGRESS_MESSAGE_MAX)
    assert recorder.sent[1] == (7, 0, "")


@pytest.mark.parametrize("bad", ["50", None, True])
def test_progress_must_be_a_number(ctx, bad):
    with pytest.raises(TypeError):
        ctx.set_progress(bad)


def test_cancel_requested_reads_the_flag_the_worker_keeps(ctx, recorder):
    assert ctx.cancel_requested is False
    recorder.cancelled.add(7)
    assert ctx.cancel_requested is True
    assert recorder.cancel_checks == 2
