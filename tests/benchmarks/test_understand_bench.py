"""The understanding benchmark runs and reports every figure (no timing assertions)."""

from __future__ import annotations

from benchmarks.understand import measure, render


def test_the_understanding_benchmark_measures_every_language() -> None:
    costs = measure(rounds=1)

    assert [c.language for c in costs] == ["es", "en"]
    for cost in costs:
        assert cost.examples > 700
        assert len(cost.per_call_us) >= 100  # one per evaluation message
        assert len(cost.train_s) == 3
        assert cost.cache_load_s == cost.cache_load_s  # loaded from the cache: not NaN
    text = render(costs)
    assert "us CPU per message" in text
    assert "training" in text
