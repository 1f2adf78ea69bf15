"""The notices' registry contract (issue 15), on memory and on a real Redis (db 15)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.store.autopipe import AutoPipeline
from bot.store.subscriptions import MemoryRegistry, NoticeRegistry, RedisRegistry
from flows.types import ConvKey

ANA = ConvKey("telegram", "1001")
LUIS = ConvKey("whatsapp", "573001112233")
DAY = 86400.0


class Clock:
    """Simulated time from now on (Redis TTLs are set from it, so it starts at the real now)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


Reg = tuple[NoticeRegistry, Clock]


@pytest.fixture(params=["memory", "redis", "redis-pipelined"])
async def reg(request: pytest.FixtureRequest) -> AsyncIterator[Reg]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryRegistry(clock), clock
        return
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    client = Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except (RedisError, OSError):
        await client.aclose()
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis for the contract tests")
    await client.flushdb()
    # As the service builds it: a turn's reads ride the session store's auto-pipeline.
    pipeline = AutoPipeline(client) if request.param == "redis-pipelined" else None
    yield RedisRegistry(client, clock, pipeline), clock
    await client.flushdb()
    if pipeline is not None:
        await pipeline.aclose()
    await client.aclose()


async def test_subscribers_of_a_target_are_listed_oldest_first(reg: Reg) -> None:
    registry, clock = reg
    await registry.subscribe("outage", "7", ANA, service_id=10, until=clock() + DAY)
    clock.now += 1
    await registry.subscribe("outage", "7", LUIS, service_id=11, until=clock() + DAY)
    subs = await registry.subscribers("outage", "7")
    assert [(s.key, s.service_id) for s in subs] == [(ANA, 10), (LUIS, 11)]
    assert await registry.targets("outage") == ["7"]
    assert await registry.targets("ticket") == []


async def test_since_stays_the_first_subscribers_time_until_the_target_is_dropped(reg: Reg) -> None:
    registry, clock = reg
    first = clock()
    await registry.subscribe("outage", "7", ANA, service_id=10, until=clock() + DAY)
    clock.now += 5
    await registry.subscribe("outage", "7", LUIS, service_id=11, until=clock() + DAY)
    assert await registry.since("outage", "7") == pytest.approx(first)
    await registry.drop("outage", "7")
    assert await registry.since("outage", "7") is None
    assert await registry.subscribers("outage", "7") == []
    assert await registry.targets("outage") == []


async def test_expired_subscriptions_are_not_told(reg: Reg) -> None:
    registry, clock = reg
    await registry.subscribe("promise", "10", ANA, service_id=10, until=clock() + 60)
    await registry.subscribe("promise", "10", LUIS, service_id=10, until=clock() + DAY)
    clock.now += 120
    assert [s.key for s in await registry.subscribers("promise", "10")] == [LUIS]
    clock.now += DAY
    assert await registry.targets("promise") == []


async def test_unsubscribing_the_last_one_forgets_the_target(reg: Reg) -> None:
    registry, clock = reg
    await registry.subscribe("ticket", "4711", ANA, service_id=10, until=clock() + DAY)
    await registry.unsubscribe("ticket", "4711", ANA)
    assert await registry.targets("ticket") == []
    assert await registry.since("ticket", "4711") is None


async def test_opt_out_and_back_in(reg: Reg) -> None:
    registry, _ = reg
    assert not await registry.opted_out(ANA)
    await registry.opt_out(ANA)
    assert await registry.opted_out(ANA)
    assert not await registry.opted_out(LUIS)
    await registry.opt_in(ANA)
    assert not await registry.opted_out(ANA)


async def test_a_notice_is_marked_once_per_customer_and_event(reg: Reg) -> None:
    registry, _ = reg
    assert await registry.mark("outage:7:1", ANA)
    assert not await registry.mark("outage:7:1", ANA)
    assert await registry.marked("outage:7:1", ANA)
    assert await registry.mark("outage:7:1", LUIS)
    assert await registry.mark("outage:7:2", ANA)


async def test_each_tick_is_claimed_once(reg: Reg) -> None:
    registry, _ = reg
    assert await registry.claim_tick("poll", 42, 60)
    assert not await registry.claim_tick("poll", 42, 60)
    assert await registry.claim_tick("poll", 43, 60)


async def test_one_run_of_a_job_at_a_time(reg: Reg) -> None:
    registry, _ = reg
    async with registry.running("poll") as first:
        assert first
        async with registry.running("poll") as second:
            assert not second
    async with registry.running("poll") as again:
        assert again
