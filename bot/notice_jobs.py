"""The notices' scheduled job (issue 15): each ``NOTIFY_POLL_SECONDS``, the polls run once
across every ``python -m bot run`` process, and what they found is sent.

With Redis, the job runs on taskiq (``taskiq`` + ``taskiq-redis``, a Redis Streams broker with
acknowledgements): every process runs a worker in process; arq was the first choice, but every
arq release pins ``redis<6`` and the service pins redis 8. Each process also runs a small
ticker: at each tick it claims the tick's number in Redis (SET NX; hand-written because
taskiq's scheduler is meant to run as ONE process, and several schedulers would each send the
job), and the one process that won it kicks the job onto the stream, where any worker takes it.

A process killed mid-tick leaves nothing half sent: each notice is a turn (saved with its
outbox before delivery, sent by the next process otherwise), marked once per customer per
event under the conversation lock, and a subscription is forgotten only after its notice
went out, so the next tick does what the killed one left (its stream message is also
reclaimed by another worker after ``RECLAIM_SECONDS``, and finds the marks).

Without Redis (console, ``make chat``) the ticker runs the job in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from bot.store import StoreError
from bot.store.subscriptions import NoticeRegistry

log = logging.getLogger(__name__)

STREAM = "wispbot:notify:jobs"  # the jobs' stream (bounded by MAXLEN)
GROUP = "wispbot-notices"
TASK = "wispbot.notices.tick"
STREAM_MAXLEN = 1000
STREAM_TTL = 24 * 3600  # renewed by each kick (every key expires; the group comes back at start)
RECLAIM_SECONDS = 120  # a job whose worker died is taken by another after this long
STOP_SECONDS = 5.0  # how long a stop waits for the ticker and the worker
RETRY_SECONDS = 1.0  # a worker whose Redis does not answer reads again after this long

Job = Callable[[int], Awaitable[None]]


class Ticker:
    """Every ``interval`` s: claim the tick (one process per tick) and run or kick the job."""

    def __init__(
        self,
        registry: NoticeRegistry,
        interval: float,
        kick: Job,
        clock: Callable[[], float],
        job: str = "poll",
    ) -> None:
        self.registry = registry
        self.interval = interval
        self.kick = kick
        self.clock = clock
        self.job = job

    async def run(self) -> None:
        """Forever: wait for the next tick, then claim and kick it."""
        while True:
            now = self.clock()
            tick = int(now // self.interval) + 1
            await asyncio.sleep(max(0.0, tick * self.interval - now))
            await self.once(tick)

    async def once(self, tick: int) -> bool:
        """Claim ``tick``; kick the job when this process won it."""
        try:
            if not await self.registry.claim_tick(self.job, tick, int(self.interval * 4) + 60):
                return False
            await self.kick(tick)
        except StoreError:
            log.warning("notice tick skipped: the store is unavailable", extra={"tick": tick})
            return False
        except Exception:
            log.exception("notice tick failed", extra={"tick": tick})
            return False
        return True


def _stream_broker() -> type[Any]:
    """taskiq-redis's stream broker, made to outlive its stream.

    The stream and its consumer group vanish with a FLUSHDB, a Redis restart without
    persistence or the key's expiry; taskiq-redis then fails every read ("NOGROUP", or
    "UNBLOCKED" for the read under way) and its receiver logs a traceback per attempt. This one
    declares the group again and reads on, and waits out a Redis that does not answer, with one
    warning line each time.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from taskiq.acks import AckableMessage
    from taskiq_redis import RedisStreamBroker

    class Broker(RedisStreamBroker):
        async def listen(self) -> AsyncGenerator[AckableMessage, None]:
            while True:
                try:
                    async for message in super().listen():
                        yield message
                except ResponseError as err:
                    if not str(err).startswith(("NOGROUP", "UNBLOCKED")):
                        raise
                    log.warning("the notice jobs' stream was gone: made again")
                    with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                        await self._declare_consumer_group()
                except (RedisConnectionError, RedisTimeoutError, OSError) as err:
                    log.warning(
                        "the notice jobs' stream is unreachable, retrying",
                        extra={"error": type(err).__name__},
                    )
                    await asyncio.sleep(RETRY_SECONDS)

    return Broker


@asynccontextmanager
async def running_jobs(
    registry: NoticeRegistry,
    interval: float,
    job: Job,
    clock: Callable[[], float],
    redis_url: str | None,
) -> AsyncIterator[Ticker]:
    """Run the ticker (and, on Redis, this process's taskiq worker) for the block."""
    tasks: list[asyncio.Task[None]] = []
    broker = None
    kick: Job = job
    if redis_url and redis_url.startswith(("redis://", "rediss://", "unix://")):
        # taskiq says "Executing task" at INFO for every tick: the service's log says what
        # a tick did instead.
        logging.getLogger("taskiq").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        from taskiq.acks import AcknowledgeType
        from taskiq.api import run_receiver_task

        broker = _stream_broker()(
            redis_url,
            queue_name=STREAM,
            consumer_group_name=GROUP,
            consumer_name=f"wispbot-{os.getpid()}-{secrets.token_hex(4)}",  # pid: for the tests
            consumer_id="0",
            maxlen=STREAM_MAXLEN,
            idle_timeout=RECLAIM_SECONDS * 1000,
            unacknowledged_lock_timeout=10,
            xread_block=1000,
        )
        task = broker.register_task(job, task_name=TASK)
        await broker.startup()
        ttl = max(STREAM_TTL, int(interval * 4))
        pool = broker.connection_pool

        async def expire() -> None:
            async with Redis(connection_pool=pool) as redis:
                await redis.expire(STREAM, ttl)

        async def kick_job(tick: int) -> None:
            await task.kiq(tick)
            await expire()

        await expire()  # the stream (made with the group at start) expires like every key

        kick = kick_job
        tasks.append(
            asyncio.create_task(
                run_receiver_task(broker, ack_time=AcknowledgeType.WHEN_EXECUTED, run_startup=False)
            )
        )
    ticker = Ticker(registry, interval, kick, clock)
    tasks.append(asyncio.create_task(ticker.run()))
    try:
        yield ticker
    finally:
        for t in tasks:
            t.cancel()
        # A receiver cancelled while it starts can swallow the cancel (taskiq restarts its
        # listener in a loop): the stop waits for it a bounded time, never for ever.
        _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
        if stuck:
            log.warning("notice jobs did not stop in time", extra={"tasks": len(stuck)})
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()
