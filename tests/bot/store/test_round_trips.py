"""The Redis store's turn costs: taking a conversation's lock also reads its session.

A turn is lock → load → save → release; the load right after the lock must not cost a round
trip of its own, and must never hand back a session older than what is stored.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.store import RedisStore, Session, StoreUnavailable, redis_key
from bot.store.autopipe import Command
from flows.types import ConvKey

KEY = ConvKey("telegram", "4242")
LIMITS: dict[str, Any] = {"rate_limit": 30, "lease": 5.0}


def _url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def stores() -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one Redis database: two processes of the service."""
    admin = Redis.from_url(_url())
    await admin.flushdb()
    await admin.aclose()
    one, two = RedisStore.from_url(_url()), RedisStore.from_url(_url())
    # Redis keeps scripts across tests (one of them flushes its script cache): load them with a
    # throwaway turn, so that counted round trips are those of a running service.
    await _one_turn(one, ConvKey("telegram", "warm-up"), "warm-up")
    admin = Redis.from_url(_url())
    await admin.flushdb()
    await admin.aclose()
    yield one, two
    await one.aclose()
    await two.aclose()


def count_commands(store: RedisStore) -> list[str]:
    """Record every round trip the store makes: one entry per batch of its auto-pipeline (its
    commands, "+"-joined) or per command sent on its own."""
    sent: list[str] = []
    original: Callable[..., Awaitable[Any]] = store.client.execute_command
    original_batch = store.pipeline._execute

    async def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await original(*args, **kwargs)

    async def batch(commands: list[Command]) -> list[Any]:
        sent.append("+".join(str(args[0]).upper() for args, _ in commands))
        return await original_batch(commands)

    store.client.execute_command = counting  # type: ignore[method-assign]
    store.pipeline._execute = batch  # type: ignore[method-assign]
    return sent


async def test_lock_then_load_is_one_round_trip_and_reads_what_another_process_saved(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, other = stores
    await other.save(KEY, Session(state="identify.ask_name", data={"doc": "123"}), 60)
    sent = count_commands(mine)

    async with mine.lock(KEY):
        loaded = await mine.load(KEY)
        during = list(sent)

    assert loaded is not None
    assert (loaded.state, loaded.data) == ("identify.ask_name", {"doc": "123"})
    assert len(during) == 1  # the lock script; the load needed nothing more


async def test_a_missing_session_is_none_without_a_second_round_trip(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, _ = stores
    sent = count_commands(mine)
    async with mine.lock(KEY):
        assert await mine.load(KEY) is None
        assert len(sent) == 1


async def test_a_load_after_a_save_under_the_lock_reads_the_saved_session(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, _ = stores
    async with mine.lock(KEY):
        assert await mine.load(KEY) is None
        await mine.save(KEY, Session(state="client.menu"), 60)
        again = await mine.load(KEY)
    assert again is not None
    assert again.state == "client.menu"


async def test_after_the_release_a_load_reads_redis_again(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, other = stores
    async with mine.lock(KEY):
        pass  # taken and released without loading: nothing stale may stay behind
    await other.save(KEY, Session(state="fault.category"), 60)

    loaded = await mine.load(KEY)

    assert loaded is not None
    assert loaded.state == "fault.category"


async def test_a_second_turn_waits_for_the_first_and_reads_its_save(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, other = stores
    async with mine.lock(KEY):
        await mine.save(KEY, Session(state="identify.ask_document"), 60)
    async with other.lock(KEY):
        loaded = await other.load(KEY)
    assert loaded is not None
    assert loaded.state == "identify.ask_document"


async def _one_turn(store: RedisStore, key: ConvKey, event: str) -> None:
    """A customer's turn as the engine runs it with a channel: open, save with the outbox,
    deliver, save and unlock."""
    start = await store.open_turn(key, event, rate_scope=f"rate:{key}", rate_window=60, **LIMITS)
    assert start.locked
    session = await store.load(key) or Session(state="main.menu")
    session.outbox = [{"text": "hola"}]
    await store.save(key, session, 60)
    session.outbox = []
    await store.save_and_release(key, session, 60)


async def test_a_turn_costs_three_round_trips(stores: tuple[RedisStore, RedisStore]) -> None:
    mine, _ = stores
    await _one_turn(mine, ConvKey("telegram", "1"), "warm-up")  # loads the scripts once
    sent = count_commands(mine)

    await _one_turn(mine, KEY, "ev1")

    assert sent == ["EVALSHA", "EVALSHA", "EVALSHA"]  # the save is fenced: a script too
    async with mine.lock(KEY, wait=0):  # and the lock was given back
        pass


async def test_a_dead_processs_lock_lapses_within_its_lease(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    dead, alive = stores
    start = await dead.open_turn(
        KEY, "ev1", rate_scope="r", rate_window=60, rate_limit=30, lease=0.5
    )
    assert start.locked
    await dead.aclose()  # killed mid-turn: nobody renews or releases its lock

    async with alive.lock(KEY, timeout=5, wait=3):  # free half a second later, not minutes
        pass


async def test_turns_of_many_conversations_at_once_share_round_trips(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """Fifty customers writing at the same moment: their turns leave in shared pipelines, so the
    store makes far fewer round trips than the 150 commands it sends, and every turn is whole."""
    mine, _ = stores
    sent = count_commands(mine)
    keys = [ConvKey("telegram", str(5000 + i)) for i in range(50)]

    await asyncio.gather(*(_one_turn(mine, k, f"burst-{k.chat_id}") for k in keys))

    commands = sum(len(trip.split("+")) for trip in sent)
    assert commands == 150  # open, save, save-and-release for each
    assert len(sent) <= 10  # in practice 3: one pipeline per step of the fifty turns
    for k in keys:
        stored = await mine.load(k)
        assert stored is not None
        assert stored.outbox == []
        assert await mine.claim_event(k.channel, f"burst-{k.chat_id}") is False  # claimed once


async def test_a_redis_that_lost_its_scripts_is_reloaded_and_the_turn_goes_on(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    """A restarted Redis forgets its script cache (NOSCRIPT): the batch loads them and resends."""
    mine, _ = stores
    await _one_turn(mine, KEY, "before")
    await mine.client.script_flush()

    await asyncio.gather(*(_one_turn(mine, ConvKey("telegram", str(i)), f"e{i}") for i in range(5)))

    assert (await mine.load(ConvKey("telegram", "4"))) is not None


async def test_one_failing_command_fails_only_its_caller(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    mine, _ = stores
    await mine.client.set(redis_key("lockout", "doc:1"), "not a number")

    results = await asyncio.gather(
        mine.register_failure("doc:1", 60),  # INCR of a string: Redis refuses
        mine.register_failure("doc:2", 60),
        return_exceptions=True,
    )

    assert isinstance(results[0], StoreUnavailable)
    assert results[1] == 1


async def test_a_lost_connection_fails_the_whole_batch_as_store_unavailable() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        results = await asyncio.gather(
            store.claim_event("telegram", "a"),
            store.failures_many(["doc:1"]),
            return_exceptions=True,
        )
    finally:
        await store.aclose()
    assert all(isinstance(r, StoreUnavailable) for r in results)


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "0" * 40, 2, "wispbot:seen:telegram:1", "wispbot:lock:telegram:1", 86400, 5000),
        ("SET", "wispbot:conv:telegram:1", '{"state":"menú","data":{"n":"Ñandú"}}', "EX", 604800),
        ("MGET", b"wispbot:lockout:doc:1", b"wispbot:lockout:chat:1"),
        ("CONFIG GET", "maxmemory"),
        ("INCRBYFLOAT", "k", 1.5),
    ],
)
async def test_the_stores_connections_send_what_redis_py_would(command: tuple[Any, ...]) -> None:
    """The store packs commands with hiredis; the bytes on the wire are redis-py's own."""
    store = RedisStore.from_url(_url())
    try:
        fast = store.client.connection_pool.connection_class()
        assert type(fast) is not Connection  # the store's own connections
        ours = b"".join(fast.pack_command(*command))
    finally:
        await store.aclose()
    assert ours == b"".join(Connection().pack_command(*command))


async def _stall(command: Any) -> None:
    await asyncio.Event().wait()  # a write the socket never takes (the peer stopped reading)


async def _reset(command: Any) -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


@pytest.mark.parametrize(
    ("write", "error"),
    [(_stall, RedisTimeoutError), (_reset, RedisConnectionError)],
    ids=["stalled", "reset"],
)
async def test_a_failed_write_is_redis_pys_error_and_drops_the_connection(
    write: Callable[[Any], Coroutine[Any, Any, None]], error: type[Exception]
) -> None:
    """The store's connections keep the write's deadline without a task of their own; a write
    that failed is what redis-py would raise, on a connection that will connect afresh."""
    store = RedisStore.from_url(_url())
    try:
        pool = store.client.connection_pool
        conn: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        conn.socket_timeout = 0.1
        conn._send_packed_command = write  # type: ignore[method-assign, assignment]
        with pytest.raises(error):
            await conn.send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
        assert not conn.is_connected
        del conn._send_packed_command
        await pool.release(conn)
        assert await store.client.ping() is True  # on that connection, connected again
    finally:
        await store.aclose()


async def test_a_write_cancelled_midway_drops_the_connection() -> None:
    store = RedisStore.from_url(_url())
    try:
        pool = store.client.connection_pool
        conn: Connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        conn._send_packed_command = _stall  # type: ignore[method-assign]
        writing = asyncio.ensure_future(conn.send_packed_command([b"*1\r\n$4\r\nPING\r\n"]))
        await asyncio.sleep(0.05)  # into the write
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        assert not conn.is_connected
        del conn._send_packed_command
        await pool.release(conn)
    finally:
        await store.aclose()
