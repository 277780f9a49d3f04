"""Run a test with a shortcut on and with it off (`core.shortcuts`), the others as configured."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from core import shortcuts


def both_ways(name: str) -> Callable[..., Iterator[bool]]:
    """Return a fixture that runs each test using it twice: shortcut `name` on (True), then off (False).

    Assign it in a test module (`raw_sql = both_ways("raw_task_sql")`) and ask for it by that
    name; the other shortcuts stay as `TASKHUB_SHORTCUTS` says.
    """

    @pytest.fixture(params=[True, False], ids=[name, f"no-{name}"])
    def fixture(request: pytest.FixtureRequest) -> Iterator[bool]:
        configured = {other for other in shortcuts.SHORTCUTS if shortcuts.enabled(other)}
        on = configured | {name} if request.param else configured - {name}
        with shortcuts.override(on):
            yield request.param

    return fixture
