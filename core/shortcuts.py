"""Which shortcuts into library internals this process takes: the one place that decides.

A shortcut replaces plain, readable Django code on a hot path with something faster that leans on
a library's internals (a client library's C struct, an ORM compiler, a framework's private state)
or saves CPU in a way an upgrade could silently break. Each lives in one named module beside the
plain version it replaces; `TASKHUB_SHORTCUTS` (settings) says which are on, every call site picks
its implementation once (`chosen`), and the tests run both. A shortcut stays only while a same-run
A/B of the benchmarks (`BENCH_ONLY=shortcuts`) shows it buys at least 10 % on its own measure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

# name → (the shortcut's module, the module of the plain version it replaces)
SHORTCUTS: dict[str, tuple[str, str]] = {
    "user_lookup": ("accounts/fast_lookup.py", "accounts/selectors.py"),
    "raw_task_sql": ("tasks/fast_sql.py", "tasks/transitions.py, tasks/services.py"),
}
# Shortcuts that were removed (their plain version caught up, or they stopped paying their way):
# still accepted in TASKHUB_SHORTCUTS, so an upgrade never stops start-up, and ignored.
RETIRED = frozenset({"reply_flags", "me_serializer", "token_cache", "health_check_read"})
ALL = "all"
NONE = "none"

_choices: list[Any] = []  # the cached choosers, forgotten by `override`
_override: frozenset[str] | None = None


def parse(value: str) -> frozenset[str]:
    """Return the shortcuts `value` turns on: `all`, `none`, or a comma-separated list of names."""
    text = value.strip().lower()
    if text == ALL:
        return frozenset(SHORTCUTS)
    if text in (NONE, ""):
        return frozenset()
    names = {name.strip() for name in text.split(",") if name.strip()} - RETIRED
    unknown = sorted(names - set(SHORTCUTS))
    if unknown:
        raise ImproperlyConfigured(
            f"TASKHUB_SHORTCUTS names unknown shortcuts {', '.join(unknown)}; "
            f"give '{ALL}', '{NONE}' or a comma-separated list of: {', '.join(SHORTCUTS)}."
        )
    return frozenset(names)


def enabled(name: str) -> bool:
    """Return True when shortcut `name` is on in this process."""
    if name not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {name!r}")
    return name in (_override if _override is not None else _configured())


@functools.cache
def _configured() -> frozenset[str]:
    from django.conf import settings

    return frozenset(settings.TASKHUB_SHORTCUTS)


def chosen(choose: Callable[[], T]) -> Callable[[], T]:
    """Decorate a call site's chooser: it runs once, on first use, and its choice is kept.

    The chooser returns the implementation the call site uses (the shortcut's when `enabled`,
    else the plain one), so the hot path never asks again.
    """
    cached = functools.cache(choose)
    _choices.append(cached)
    return cached


@contextmanager
def override(on: Iterable[str]) -> Iterator[None]:
    """Run the block with exactly the shortcuts `on` (tests run each path both ways with it)."""
    global _override
    names = frozenset(on)
    unknown = names - set(SHORTCUTS)
    if unknown:
        raise ValueError(f"unknown shortcuts {sorted(unknown)}")
    saved = _override
    _override = names
    _forget_choices()
    try:
        yield
    finally:
        _override = saved
        _forget_choices()


def _forget_choices() -> None:
    for choice in _choices:
        choice.cache_clear()
