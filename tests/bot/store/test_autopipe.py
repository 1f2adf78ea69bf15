"""The auto-pipeline's own failure paths, on a real Redis (db 15) reached through a local proxy
that can cut a reply short or hold requests back (tests/fakes/slow_link.py).

A command's own error reaches only its caller; a connection that fails mid-batch fails every
command of the batch, and is never used again with replies left unread: the next batch reads
its own replies.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from slow_link import SlowLink

from bot.store.autopipe import AutoPipeline
from bot.store.connection import connect

BIG = b"x" * 20_000  # a reply longer than any cut below


def _url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def link() -> AsyncIterator[SlowLink]:
    admin = Redis.from_url(_url(), socket_connect_timeout=0.5)
    try:
        await admin.flushdb()
        await admin.set("big", BIG)
    except (RedisError, OSError):
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis for the auto-pipeline tests")
    finally:
        await admin.aclose()
    target = urlsplit(_url())
    proxy = SlowLink(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.aclose()


def _through(link: SlowLink) -> str:
    return urlsplit(_url())._replace(netloc=f"127.0.0.1:{link.listen_port}").geturl()


async def _batch(pipe: AutoPipeline, *queues: Any) -> list[Any]:
    """Queued in one tick: one batch."""
    return await asyncio.gather(*(pipe.run(q) for q in queues), return_exceptions=True)


async def test_a_commands_own_error_reaches_only_its_caller(link: SlowLink) -> None:
    client, _ = connect(_through(link))  # the store's client: hiredis packing, its retries
    pipe = AutoPipeline(client)
    try:
        await client.set("text", "not a number")
        results = await _batch(
            pipe,
            lambda p: p.set("a", 1),
            lambda p: p.incr("text"),  # Redis refuses
            lambda p: p.set("b", None),  # cannot even be sent
            lambda p: p.lpush("text", 1),  # WRONGTYPE
            lambda p: p.get("a"),
        )
    finally:
        await pipe.aclose()
        await client.aclose()
    assert results[0] is True  # redis-py's response callback: SET answers True
    assert isinstance(results[1], ResponseError)
    assert isinstance(results[2], DataError)
    assert isinstance(results[3], ResponseError)
    assert "WRONGTYPE" in str(results[3])
    assert results[4] == b"1"


async def test_a_connection_cut_mid_reply_fails_the_batch_and_the_next_batch_reads_its_own(
    link: SlowLink,
) -> None:
    client, _ = connect(_through(link))
    pipe = AutoPipeline(client)
    try:
        assert await pipe.run(lambda p: p.set("n", 0)) is True  # connected, kept for batches
        link.cut_after = 100  # the first reply whole, the second cut short; every retry too

        failed = await _batch(pipe, lambda p: p.incr("n"), lambda p: p.get("big"))

        link.cut_after = None
        later = await _batch(pipe, lambda p: p.get("big"), lambda p: p.set("m", 2))
    finally:
        await pipe.aclose()
        await client.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in failed), failed
    assert later == [BIG, True]


async def test_a_reply_late_past_the_deadline_fails_the_batch_and_its_connection_goes(
    link: SlowLink,
) -> None:
    """The late replies arrive on a connection nobody reads any more: the next batch, on
    another, gets its own."""
    client = Redis.from_url(_through(link), socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    pipe = AutoPipeline(client)
    try:
        assert await pipe.run(lambda p: p.set("n", 0)) is True
        link.delay = 2.0  # Redis hangs, as far as this client can tell
        started = time.monotonic()

        failed = await _batch(pipe, lambda p: p.incr("n"), lambda p: p.get("big"))

        waited = time.monotonic() - started
        link.delay = 0.0
        later = await _batch(pipe, lambda p: p.get("big"), lambda p: p.set("m", 2))
    finally:
        await pipe.aclose()
        await client.aclose()
    assert all(isinstance(r, RedisTimeoutError) for r in failed), failed
    assert waited < 1.5  # the deadline, not the late reply
    assert later == [BIG, True]


@pytest.mark.parametrize("after", [None, 0.2], ids=["before-it-starts", "mid-reply"])
async def test_a_cancelled_batch_cancels_its_callers_and_drops_its_connection(
    link: SlowLink, after: float | None
) -> None:
    client, _ = connect(_through(link))
    pipe = AutoPipeline(client)
    try:
        assert await pipe.run(lambda p: p.set("n", 0)) is True
        link.delay = 2.0
        caller = asyncio.ensure_future(_batch(pipe, lambda p: p.incr("n"), lambda p: p.get("big")))
        while not (sending := [t for t in pipe._tasks if not t.done()]):  # noqa: ASYNC110
            await asyncio.sleep(0)  # the batch leaves at the end of this tick
        if after is not None:
            await asyncio.sleep(after)  # on the wire by then; its replies held back by the link
        for task in sending:
            task.cancel()  # as at shutdown
        cancelled = await caller

        link.delay = 0.0
        later = await _batch(pipe, lambda p: p.get("big"), lambda p: p.set("m", 2))
    finally:
        await pipe.aclose()
        await client.aclose()
    assert all(isinstance(r, asyncio.CancelledError) for r in cancelled), cancelled
    assert later == [BIG, True]
