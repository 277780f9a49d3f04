from __future__ import annotations

from types import SimpleNamespace

from bench import scale


def test_the_claim_rate_is_the_median_of_repeated_drains(monkeypatch) -> None:
    rates = iter([3000.0, 1000.0, 2000.0])
    added = []

    def child(ctx, database, kind, *args, **kwargs):
        added.append(args)
        return {"count": 2000, "first_id": len(added) * 10_000}

    def drain(ctx, database, *, workers, expected, first_id):
        return {"count": expected, "seconds": 1.0, "rate": next(rates), "first_id": first_id}

    monkeypatch.setattr(scale.taskhub, "child", child)
    monkeypatch.setattr(scale.taskhub, "drain", drain)
    ctx = SimpleNamespace(cfg=SimpleNamespace(repeats=3, claim_tasks=2000))

    result = scale._claim(ctx, "bench_scale_10k")

    assert result["rate"] == 2000.0 and result["first_id"] == 30_000  # the median drain, whole
    assert result["rates"] == [3000.0, 1000.0, 2000.0]
    assert added == [("--rows", "2000")] * 3  # fresh tasks for every drain
