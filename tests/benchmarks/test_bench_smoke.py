"""The benchmark harness works end to end: both bots start, answer every step, and are measured.

A tiny load only (no timing assertions: speed is measured by ``make bench``, never by tests).
"""

from __future__ import annotations

import pytest

from benchmarks.__main__ import Options, bench, render

pytestmark = pytest.mark.e2e


async def test_both_bots_answer_every_step_and_the_outage_run_answers_everyone() -> None:
    # Databases 8, 9 and 13: not the ones `make bench` uses, so a test run never wipes a benchmark.
    opts = Options(
        customers=3,
        rounds=1,
        outage_customers=20,
        outage_window=1.0,
        wispbot_db=8,
        peer_db=9,
        peer_uvloop_db=13,
        storm_customers=0,  # the storm has its own smoke test
    )

    report = await bench(opts)

    wispbot, peer, peer_uvloop = report.bots
    labels = (wispbot.spec.label, peer.spec.label, peer_uvloop.spec.label)
    assert labels == ("wispbot", "peer", "peer+uvloop")
    for bot in (wispbot, peer, peer_uvloop):
        for run in (bot.distinct, bot.same):
            assert run.errors == []
            assert (run.completed, run.conversations) == (3, 3)
            assert (run.messages, run.answered, run.unanswered) == (12, 12, 0)
            assert len(run.latencies) == 12
    # The free-text conversation (issue 13): the replies each bot gives are learned, then run.
    for bot in (wispbot, peer):
        assert bot.free is not None
        assert bot.free.errors == []
        assert (bot.free.completed, bot.free.conversations, bot.free.unanswered) == (3, 3, 0)
        assert [s.value for s in bot.free_steps][:2] == ["hola", "soy cliente"]
        assert all(s.replies >= 1 for s in bot.free_steps)
    # Distinct customers: one look-up each for both bots. The same customer: the peer asks
    # WispHub every time, wispbot's cache answers (the warm-up and the first one looked it up).
    assert wispbot.distinct.calls_per_conversation == 1
    assert peer.distinct.calls_per_conversation == 1
    assert peer.same.calls_per_conversation == 1
    assert wispbot.same.wisphub_calls <= 1
    # One bubble per turn: one Bot API send per customer message; the peer sends a text and a
    # menu for the greeting and the verified menu (6 for 4 messages).
    assert wispbot.distinct.sends_per_message == 1
    assert peer.distinct.sends_per_message == 1.5

    outage = report.outage
    assert outage is not None
    assert outage.errors == []
    assert (outage.completed, outage.conversations, outage.unanswered) == (20, 20, 0)
    assert outage.wisphub_calls == 20
    assert 1 <= outage.wisphub_peak <= 16  # WISPHUB_MAX_CONCURRENCY's default bounds it

    text = render(report)
    assert "messages/s" in text
    assert "Bot API sends per customer message (issue 14, target <= 1.1): 1.00 -> met" in text
    assert "mass outage" in text
    assert "control, the peer on uvloop" in text
    assert "free text (hola -> soy cliente" in text
    assert report.logs is not None
    [log] = report.logs.glob("peer+uvloop-*.log")
    assert "event loop: uvloop" in log.read_text()
