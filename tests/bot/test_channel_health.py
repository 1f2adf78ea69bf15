"""The send health behind /readyz: a channel is down only when every send of the window failed."""

from __future__ import annotations

from bot.channel_health import SendHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_channel_is_failing_once_its_sends_failed_for_the_whole_window() -> None:
    clock = Clock()
    health = SendHealth(60, clock)
    health.record("whatsapp", ok=False)
    assert health.failing() == []  # one failure is no outage yet
    clock.now += 30
    health.record("whatsapp", ok=False)
    assert health.failing() == []
    clock.now += 30
    health.record("whatsapp", ok=False)
    assert health.failing() == ["whatsapp"]
    health.record("telegram", ok=True)
    assert health.failing() == ["whatsapp"]  # channels are apart


def test_one_success_clears_the_channel() -> None:
    clock = Clock()
    health = SendHealth(60, clock)
    health.record("whatsapp", ok=False)
    clock.now += 61
    health.record("whatsapp", ok=False)
    assert health.failing() == ["whatsapp"]
    health.record("whatsapp", ok=True)
    assert health.failing() == []
    health.record("whatsapp", ok=False)  # a new streak starts from scratch
    assert health.failing() == []


def test_a_success_within_the_window_keeps_the_channel_up() -> None:
    clock = Clock()
    health = SendHealth(60, clock)
    health.record("whatsapp", ok=False)
    clock.now += 50
    health.record("whatsapp", ok=True)
    clock.now += 20
    health.record("whatsapp", ok=False)
    assert health.failing() == []


def test_old_failures_with_no_send_since_are_not_an_outage() -> None:
    clock = Clock()
    health = SendHealth(60, clock)
    health.record("whatsapp", ok=False)
    clock.now += 70
    health.record("whatsapp", ok=False)
    assert health.failing() == ["whatsapp"]
    clock.now += 60  # nothing sent for a window: no news is not bad news
    assert health.failing() == []
