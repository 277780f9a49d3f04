"""Outcome helpers: bounded errors that keep what matters, and results the database can hold."""

from __future__ import annotations

import pytest

from tasks.outcomes import (
    ERROR_MAX_CHARS,
    RESULT_MAX_BYTES,
    Outcome,
    OutcomeKind,
    bound_error,
    check_result,
    format_error,
)


def raise_nested(depth: int, message: str) -> None:
    if depth == 0:
        raise ValueError(message)
    raise_nested(depth - 1, message)


def caught(func, *args) -> BaseException:
    try:
        func(*args)
    except Exception as exc:
        return exc
    raise AssertionError("no exception")


def test_an_error_starts_with_type_and_message_and_shows_where_it_was_raised():
    error = format_error(caught(raise_nested, 2, "bad value"))
    assert error.startswith("ValueError: bad value\n\nTraceback (most recent call last):")
    assert "raise ValueError(message)" in error


def raise_chained(level: int) -> None:
    try:
        if level == 0:
            raise ValueError("root cause")
        raise_chained(level - 1)
    except Exception as exc:
        raise RuntimeError(f"failed at level {level}") from exc


def test_a_long_traceback_is_cut_in_the_middle_keeping_head_and_raise_site():
    error = format_error(caught(raise_chained, 100))
    assert len(error) <= ERROR_MAX_CHARS
    assert error.startswith("RuntimeError: failed at level 100")
    assert "characters cut" in error
    assert error.rstrip().endswith("RuntimeError: failed at level 100")


def test_a_huge_message_does_not_push_the_traceback_out():
    error = format_error(caught(raise_nested, 1, "x" * 100_000))
    assert len(error) <= ERROR_MAX_CHARS
    assert "Traceback (most recent call last)" in error
    assert "raise_nested" in error


def test_chained_exceptions_keep_their_cause():
    def wrap() -> None:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise RuntimeError("outer") from exc

    error = format_error(caught(wrap))
    assert "KeyError: 'inner'" in error and "RuntimeError: outer" in error


def test_bound_error_leaves_short_text_alone():
    assert bound_error("short") == "short"
    cut = bound_error("a" * 50 + "b" * 50, limit=60)
    assert len(cut) <= 60 and cut.startswith("a") and cut.endswith("b")


def test_the_log_summary_is_the_first_line_cut_short():
    outcome = Outcome(1, OutcomeKind.RETRYABLE, error="E: " + "y" * 1000 + "\nmore")
    assert outcome.summary.startswith("E: y") and len(outcome.summary) <= 300
    assert Outcome(1, OutcomeKind.SUCCEEDED).summary == ""


@pytest.mark.parametrize("result", [None, 1, "text 🚀", [1, 2.5, None], {"nested": {"ok": True}}])
def test_json_results_are_accepted(result):
    assert check_result(result) is None


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"when": object()}, "not JSON-serialisable"),
        (float("nan"), "not JSON-serialisable"),
        ({"inf": float("inf")}, "not JSON-serialisable"),
        ("x" * (RESULT_MAX_BYTES + 1), "too large"),
    ],
)
def test_results_the_database_cannot_hold_are_refused(result, reason):
    assert reason in check_result(result)
