"""The soak harness works end to end: every step answered, RSS and Redis keys sampled.

A tiny load only (``make soak`` runs the 20,000 messages); no timing assertions.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import SOAK, Options, kind_of, render, soak

pytestmark = pytest.mark.e2e


def test_kinds_of_keys() -> None:
    assert kind_of("wispbot:conv:telegram:1") == "conv"
    assert kind_of("wispbot:lock:telegram:1:queue") == "lock:queue"
    assert kind_of("wispbot:turns:inflight") == "turns"


async def test_a_small_soak_answers_everything_and_leaves_no_key_without_a_ttl() -> None:
    # Database 5: not the one `make soak` uses (6), so a test run never wipes a soak running.
    report = await soak(Options(conversations=8, workers=4, redis_db=5))

    assert [r.errors for r in report.runs] == [[]] * 4
    assert report.total("completed") == report.total("conversations") == 8
    assert report.total("answered") == report.total("messages") == 8 * len(SOAK)
    labels = [s.label for s in report.samples]
    assert labels == ["warm-up", "25%", "50%", "75%", "100%"]
    assert all(s.rss_kib > 0 for s in report.samples)
    final = report.final
    assert final.conversations == 8
    # Sessions, dedupe marks, rate windows and the handoffs' topics, all with a TTL.
    assert {"conv", "seen", "rate", "topic"} <= set(final.kinds)
    assert final.without_ttl == 0
    text = render(report)
    assert "without TTL" in text
    assert "every key has a TTL: 0 without -> met" in text
