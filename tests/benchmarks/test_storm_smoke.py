"""The Telegram-limit storm works end to end: wispbot, its pacing on, answers a burst of
customers against a fake Bot API that enforces 30 messages a second overall, without a 429.

A small load with generous bounds (speed is measured by ``make bench``, never by tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.storm import storm_lines, storm_run

pytestmark = pytest.mark.e2e


async def test_a_storm_is_answered_within_the_limit_without_a_429(tmp_path: Path) -> None:
    # 45 customers: more than one second's worth of Telegram's limit. Database 8: not one
    # `make bench` uses.
    storm = await storm_run(45, redis_db=8, workdir=tmp_path)

    run = storm.run
    assert run.errors == []
    assert storm.everyone_answered
    assert run.refusals == 0  # the pacing kept under the limit: no 429 provoked
    assert run.sends_per_message == 1  # one bubble: greeting and menu in one message
    assert storm.delivered == 45
    assert storm.last_answer >= 1.0  # 45 messages cannot all leave within one second
    assert storm.ratio < 5  # generous: a loaded machine runs slow, never faster than the limit
    assert "429s provoked 0" in "\n".join(storm_lines(storm))
