from __future__ import annotations

from types import SimpleNamespace

from bench import scale


def test_the_claim_rate_is_the_median_of_repeated_drains(monkeypatch) -> None:
    rates = iter([3000.0, 1000.0, 2000.0])
    added = []

    def child(ctx, database, kind, *args, **kwargs):
        added.append(args)
        return {"count": 2000, "first_id": len(added) * 10_000}

    steps = []

    def drain(ctx, database, *, workers, expected, first_id):
        steps.append(("drain", first_id))
        return {"count": expected, "seconds": 1.0, "rate": next(rates), "first_id": first_id}

    def purge_drained(ctx, database, *, first_id):
        steps.append(("purge", first_id))
        return 10_000

    monkeypatch.setattr(scale.taskhub, "child", child)
    monkeypatch.setattr(scale.taskhub, "drain", drain)
    monkeypatch.setattr(scale, "purge_drained", purge_drained)
    ctx = SimpleNamespace(cfg=SimpleNamespace(repeats=3, claim_tasks=2000))

    result = scale._claim(ctx, "bench_scale_10k")

    assert result["rate"] == 2000.0 and result["first_id"] == 30_000  # the median drain, whole
    assert result["rates"] == [3000.0, 1000.0, 2000.0]
    assert added == [("--rows", "2000")] * 3  # fresh tasks for every drain
    # ... and each drain's tasks deleted before the next, so "10k" stays 10k rows
    assert steps == [(kind, n * 10_000) for n in (1, 2, 3) for kind in ("drain", "purge")]
