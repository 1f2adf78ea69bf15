"""The neutral waiting module: the per-key FIFO lock and the retry helper."""

from __future__ import annotations

import asyncio

import pytest

from bot.concurrency import GaveUp, KeyedLock, retrying


async def test_holders_of_one_key_run_one_at_a_time_in_arrival_order() -> None:
    locks: KeyedLock[str] = KeyedLock()
    trace: list[str] = []

    async def hold(name: str, key: str) -> None:
        async with locks.hold(key):
            trace.append(f"{name} in")
            for _ in range(3):
                await asyncio.sleep(0)
            trace.append(f"{name} out")

    await asyncio.gather(hold("a", "ana"), hold("b", "ana"), hold("c", "ana"))

    assert trace == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert not locks.busy("ana")  # forgotten once unused


async def test_holders_of_different_keys_do_not_wait_for_each_other() -> None:
    locks: KeyedLock[str] = KeyedLock()
    async with locks.hold("ana"):
        assert locks.busy("ana")
        async with asyncio.timeout(1), locks.hold("luis"):
            pass


class Flaky(Exception):
    pass


class Refused(Exception):
    pass


async def test_retrying_waits_as_told_and_returns_the_first_success() -> None:
    failures = [Flaky("one"), Flaky("two")]
    told: list[tuple[str, int, float]] = []

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    def wait_after(err: Exception, attempt: int) -> float | None:
        return 0.001 * (attempt + 1) if isinstance(err, Flaky) else None

    result = await retrying(
        call, wait_after, attempts=3, on_retry=lambda e, n, w: told.append((str(e), n, w))
    )

    assert result == "ok"
    assert told == [("one", 1, 0.001), ("two", 2, 0.002)]


async def test_retrying_raises_a_refusal_at_once() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Refused

    with pytest.raises(Refused):
        await retrying(call, lambda e, n: None, attempts=5)
    assert calls == 1


async def test_retrying_gives_up_after_its_attempts_with_the_last_error() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Flaky(f"failure {calls}")

    with pytest.raises(GaveUp) as caught:
        await retrying(call, lambda e, n: 0.0, attempts=3)
    assert calls == 3
    assert caught.value.attempts == 3
    assert str(caught.value.error) == "failure 3"
