from __future__ import annotations

import pytest

from bench.db import check_bench_name


@pytest.mark.parametrize("name", ["taskhub", "test_taskhub", "bench_x`; DROP DATABASE taskhub", "BENCH_X", "bench_"])
def test_it_refuses_to_touch_databases_outside_bench(name: str) -> None:
    with pytest.raises(ValueError):
        check_bench_name(name)


def test_it_accepts_bench_databases() -> None:
    assert check_bench_name("bench_scale_1m") == "bench_scale_1m"
