"""The notices benchmark works end to end on a small load (no timing assertions: speed is
measured by ``make bench``, never by tests)."""

from __future__ import annotations

import pytest

from benchmarks.notices import bench_notices, render

pytestmark = pytest.mark.e2e


async def test_every_subscriber_is_told_once_while_a_conversation_is_answered() -> None:
    # Database 5: not one `make bench` uses, so a test run never wipes a benchmark.
    result = await bench_notices(subscribers=60, rate=30.0, redis_db=5)
    assert result.errors == []
    assert (result.told, result.twice) == (60, 0)
    assert result.latencies
    assert result.unanswered == 0
    assert "p99" in render(result)
