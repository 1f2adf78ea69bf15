"""The session store contract, run against the in-memory store and a real Redis (db 15)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import RedisError

from bot.store import (
    LockTimeout,
    MemoryStore,
    RedisStore,
    Session,
    SessionCorrupt,
    SessionStore,
    StoreUnavailable,
    TurnStart,
    conv_key,
    make_store,
    parse_sentinel_url,
    promise_key,
    redis_key,
)
from flows.ports import Promise
from flows.types import ConvKey, Option, Outbound

ANA = ConvKey("telegram", "1001")
LUIS = ConvKey("whatsapp", "573001112233")
DAY = 86400
LIMITS: dict[str, Any] = {"rate_limit": 30, "lease": 5.0}


def _redis_url() -> str:
    # Read at use time: with importlib mode the root conftest is not importable as a module.
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


class FakeClock:
    """Simulated epoch seconds that only move when a test says so."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """The store under test plus the means to make time pass and to write raw values."""

    kind: str
    store: SessionStore
    clock: FakeClock
    admin: Redis | None = None  # a separate client, for inspecting and ageing keys

    async def elapse(self, seconds: float, *names: str) -> None:
        """Let ``seconds`` pass for the given keys (memory: every key)."""
        if self.admin is None:
            self.clock.advance(seconds)
            return
        # Redis time cannot be simulated: shorten each key's remaining TTL instead; a
        # non-positive PEXPIRE expires the key at once, as time passing would.
        for name in names:
            left = await self.admin.pttl(name)
            if left >= 0:
                await self.admin.pexpire(name, max(0, left - int(seconds * 1000)))

    async def put_raw(self, name: str, value: str) -> None:
        """Store a value bypassing the store's own serialisation."""
        if self.admin is None:
            assert isinstance(self.store, MemoryStore)
            self.store._values[name] = (value, None)
        else:
            await self.admin.set(name, value)

    @contextlib.asynccontextmanager
    async def other_process(self) -> AsyncIterator[SessionStore]:
        """Another process's store on the same backend (memory: the same store)."""
        if self.admin is None:
            yield self.store
            return
        other = RedisStore.from_url(_redis_url())
        try:
            yield other
        finally:
            await other.aclose()

    async def taken_for_dead(self, store: SessionStore) -> None:
        """Redis only: the store's process key lapses (a long pause: it is taken for dead)."""
        assert self.admin is not None
        assert isinstance(store, RedisStore)
        name = redis_key("alive", store._process)
        for _ in range(100):  # its first renewal is on its way: let it land, then lapse it
            if await self.admin.exists(name):
                break
            await asyncio.sleep(0.01)
        await self.admin.delete(name)  # renewed again only a third of a lease later

    def now(self) -> float:
        """The store's now: the simulated clock in memory, the real one with Redis."""
        return self.clock() if self.admin is None else time.time()

    async def pttl(self, name: str) -> int:
        """Redis only: the key's remaining time to live in ms."""
        assert self.admin is not None
        return int(await self.admin.pttl(name))


_reachable: dict[str, bool] = {}


async def _redis_or_skip(url: str) -> Redis:
    """A client for the test database, or skip (fail under CI) when no Redis answers."""
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    if url not in _reachable:
        try:
            _reachable[url] = bool(await client.ping())
        except (RedisError, OSError):
            _reachable[url] = False
    if not _reachable[url]:
        await client.aclose()
        if os.environ.get("CI"):
            pytest.fail(f"no Redis at {url}; CI must run the Redis contract tests")
        pytest.skip(f"no Redis at {url}")
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    admin = await _redis_or_skip(_redis_url())
    await admin.flushdb()
    redis_store = RedisStore.from_url(_redis_url())
    request.node.stash[_ADMIN] = admin
    try:
        yield redis_store
    finally:
        await redis_store.aclose()
        await admin.aclose()


_ADMIN = pytest.StashKey[Redis]()


@pytest.fixture
def backend(request: pytest.FixtureRequest, store: SessionStore, clock: FakeClock) -> Backend:
    admin = request.node.stash.get(_ADMIN, None)
    return Backend("redis" if admin else "memory", store, clock, admin)


def _session(state: str = "client_menu", **data: object) -> Session:
    return Session(state=state, data=dict(data), lang="es", updated_at=1_750_000_000.5)


class TestStoreContract:
    """Behaviour every store must show; the engine relies on nothing else."""

    async def test_save_then_load_returns_the_same_session(self, store: SessionStore) -> None:
        reply = Outbound(ANA, "¿Qué deseas hacer?", (Option("account", "Estado de cuenta"),))
        saved = Session(
            state="client_menu",
            data={"service_id": 10, "name": "Ana María Ruiz", "tickets": [4711]},
            lang="en",
            verified_until=1_750_000_900.0,
            updated_at=1_750_000_000.25,
            outbox=[reply.to_dict()],
        )
        await store.save(ANA, saved, ttl=DAY)

        loaded = await store.load(ANA)

        assert loaded == saved
        assert loaded is not None
        assert Outbound.from_dict(loaded.outbox[0]) == reply
        loaded.data["service_id"] = 99  # changing a loaded copy never changes what is stored
        assert await store.load(ANA) == saved

    async def test_an_unclaimed_event_is_handled_when_it_comes_again(
        self, store: SessionStore
    ) -> None:
        assert await store.claim_event("telegram", "88001") is True
        await store.unclaim_event("telegram", "88001")
        assert await store.claim_event("telegram", "88001") is True
        assert await store.claim_event("telegram", "88001") is False

    async def test_the_inbox_gives_kept_events_back_once_oldest_first(
        self, store: SessionStore
    ) -> None:
        assert await store.pop_inbox() == []
        for n in range(3):
            await store.push_inbox(f'{{"n": {n}}}')
        assert await store.pop_inbox(limit=2) == ['{"n": 0}', '{"n": 1}']
        assert await store.pop_inbox() == ['{"n": 2}']
        assert await store.pop_inbox() == []

    async def test_load_of_an_unknown_conversation_is_none(self, store: SessionStore) -> None:
        await store.save(ANA, _session(), ttl=DAY)
        assert await store.load(LUIS) is None
        assert await store.load(ConvKey("whatsapp", ANA.chat_id)) is None

    async def test_session_expires_after_its_idle_ttl(self, backend: Backend) -> None:
        store = backend.store
        await store.save(ANA, _session(), ttl=60)
        if backend.kind == "redis":
            assert 59_000 < await backend.pttl(conv_key(ANA)) <= 60_000

        await backend.elapse(50, conv_key(ANA))
        assert await store.load(ANA) is not None
        await store.save(ANA, _session("verify"), ttl=60)  # activity renews the idle TTL
        await backend.elapse(50, conv_key(ANA))
        assert await store.load(ANA) == _session("verify")
        await backend.elapse(11, conv_key(ANA))
        assert await store.load(ANA) is None

    async def test_save_rejects_a_non_positive_ttl(self, store: SessionStore) -> None:
        with pytest.raises(ValueError, match="ttl"):
            await store.save(ANA, _session(), ttl=0)

    async def test_a_fractional_ttl_is_whole_seconds(self, backend: Backend) -> None:
        await backend.store.save(ANA, _session(), ttl=90.7)  # type: ignore[arg-type]
        await backend.elapse(89, conv_key(ANA))
        assert await backend.store.load(ANA) is not None
        await backend.elapse(1, conv_key(ANA))
        assert await backend.store.load(ANA) is None

    async def test_move_gives_the_session_to_the_new_key_with_its_ttl(
        self, backend: Backend
    ) -> None:
        """A customer's number changed: the conversation follows, unless the new number
        already has one (then nothing moves)."""
        store, new = backend.store, ConvKey("whatsapp", "573009998877")
        await store.save(LUIS, _session("verify"), ttl=60)
        await backend.elapse(50, conv_key(LUIS))

        assert await store.move(LUIS, new)
        assert await store.load(LUIS) is None
        assert await store.load(new) == _session("verify")
        await backend.elapse(11, conv_key(new))  # the idle TTL came along, not renewed
        assert await store.load(new) is None

        assert not await store.move(LUIS, new)  # nothing to move
        await store.save(LUIS, _session("a"), ttl=DAY)
        await store.save(new, _session("b"), ttl=DAY)
        assert not await store.move(LUIS, new)  # the new key keeps its own
        assert await store.load(LUIS) == _session("a")
        assert await store.load(new) == _session("b")

    async def test_an_event_is_claimed_once_per_channel(self, backend: Backend) -> None:
        store = backend.store
        assert await store.claim_event("telegram", "77001") is True
        assert await store.claim_event("telegram", "77001") is False
        assert await store.claim_event("whatsapp", "77001") is True
        name = redis_key("seen", "telegram", "77001")
        if backend.kind == "redis":
            assert DAY * 1000 - 2000 < await backend.pttl(name) <= DAY * 1000

        await backend.elapse(DAY + 1, name)
        assert await store.claim_event("telegram", "77001") is True

    async def test_concurrent_claims_of_one_event_let_exactly_one_through(
        self, store: SessionStore
    ) -> None:
        results = await asyncio.gather(
            *(store.claim_event("whatsapp", "wamid.HBgM") for _ in range(20))
        )
        assert results.count(True) == 1

    async def test_lock_runs_critical_sections_one_at_a_time(self, store: SessionStore) -> None:
        trace: list[str] = []

        async def handle(name: str) -> None:
            async with store.lock(ANA, timeout=5, wait=5):
                trace.append(f"{name} in")
                for _ in range(5):  # give the other task every chance to barge in
                    await asyncio.sleep(0)
                trace.append(f"{name} out")

        await asyncio.gather(handle("a"), handle("b"), handle("c"))

        pairs = [trace[i : i + 2] for i in range(0, len(trace), 2)]
        assert all(p[0].split()[0] == p[1].split()[0] for p in pairs), trace
        assert sorted(p[0] for p in pairs) == ["a in", "b in", "c in"]

    async def test_locks_of_different_conversations_are_independent(
        self, store: SessionStore
    ) -> None:
        async with store.lock(ANA), store.lock(LUIS, wait=0):
            pass

    async def test_a_busy_lock_raises_lock_timeout_after_wait(self, store: SessionStore) -> None:
        async with store.lock(ANA, timeout=30):
            with pytest.raises(LockTimeout):
                async with store.lock(ANA, wait=0.05):
                    pytest.fail("entered a lock that another holds")
        async with store.lock(ANA, wait=0):  # released on exit: free again
            pass

    async def test_the_lock_is_released_when_the_body_raises(self, store: SessionStore) -> None:
        with pytest.raises(RuntimeError):
            async with store.lock(ANA):
                raise RuntimeError("flow failed")
        async with store.lock(ANA, wait=0):
            pass

    async def test_a_dead_owners_lock_expires_after_its_timeout(self, backend: Backend) -> None:
        store = backend.store
        async with backend.other_process() as dead:
            crashed = dead.lock(ANA, timeout=10)
            await crashed.__aenter__()  # taken and never released: the process died
            with pytest.raises(LockTimeout):
                async with store.lock(ANA, wait=0):
                    pass
            if backend.admin is not None:  # Redis: its key lapses with it
                await backend.taken_for_dead(dead)
            await backend.elapse(11, redis_key("lock", ANA.channel, ANA.chat_id))

            async with store.lock(ANA, wait=1):
                pass
            await crashed.__aexit__(None, None, None)

    async def test_a_late_owner_never_releases_the_next_owners_lock(
        self, backend: Backend, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with backend.other_process() as paused:
            await self._late_owner(backend, paused, caplog)

    async def _late_owner(
        self, backend: Backend, paused: SessionStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = backend.store
        slow = paused.lock(ANA, timeout=10)
        await slow.__aenter__()
        await backend.elapse(11, redis_key("lock", ANA.channel, ANA.chat_id))
        if backend.admin is not None:  # Redis: a lapsed owner keeps its place while it lives
            with pytest.raises(LockTimeout):
                async with store.lock(ANA, wait=0.2):
                    pass
            await backend.taken_for_dead(paused)

        async with store.lock(ANA, timeout=30, wait=1):
            with caplog.at_level(logging.WARNING, logger="bot.store"):
                await slow.__aexit__(None, None, None)  # A finishes after its lock expired
            with pytest.raises(LockTimeout):
                async with store.lock(ANA, wait=0):
                    pytest.fail("B's lock was released by A")
        assert "expired before its owner released it" in caplog.text
        async with store.lock(ANA, wait=0):
            pass

    async def test_failures_count_within_a_fixed_window(self, backend: Backend) -> None:
        store = backend.store
        name = redis_key("lockout", "doc:123456")
        assert await store.failures("doc:123456") == 0
        assert await store.register_failure("doc:123456", window=1800) == 1
        await backend.elapse(1000, name)
        assert await store.register_failure("doc:123456", window=1800) == 2
        assert await store.register_failure("chat:telegram:1001", window=1800) == 1
        assert await store.failures("doc:123456") == 2

        # The window started with the first failure; later ones do not extend it.
        await backend.elapse(801, name)
        assert await store.failures("doc:123456") == 0
        assert await store.register_failure("doc:123456", window=1800) == 1

    async def test_clearing_failures_resets_the_count(self, store: SessionStore) -> None:
        for _ in range(3):
            await store.register_failure("doc:9", window=1800)
        await store.clear_failures("doc:9")
        assert await store.failures("doc:9") == 0
        assert await store.register_failure("doc:9", window=1800) == 1

    async def test_failures_of_several_scopes_are_read_and_cleared_together(
        self, store: SessionStore
    ) -> None:
        await store.register_failure("doc:9", window=1800)
        await store.register_failure("doc:9", window=1800)
        await store.register_failure("chat:telegram:1001", window=1800)
        scopes = ["doc:9", "lookup:telegram:1001", "chat:telegram:1001"]
        assert await store.failures_many(scopes) == [2, 0, 1]
        assert await store.failures_many([]) == []

        await store.clear_failures("doc:9", "chat:telegram:1001")
        assert await store.failures_many(scopes) == [0, 0, 0]
        await store.clear_failures()  # nothing to clear is fine

    async def test_open_turn_claims_counts_locks_and_reads_the_session(
        self, store: SessionStore
    ) -> None:
        await store.save(ANA, _session("identify.ask_name", doc="123"), DAY)

        start = await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)

        assert start == TurnStart(claimed=True, hits=1, locked=True)
        loaded = await store.load(ANA)
        assert loaded is not None
        assert (loaded.state, loaded.data) == ("identify.ask_name", {"doc": "123"})
        with pytest.raises(LockTimeout):  # held until released
            async with store.lock(ANA, wait=0):
                pytest.fail("entered a lock open_turn holds")
        await store.release(ANA)
        async with store.lock(ANA, wait=0):
            pass

    async def test_open_turn_of_a_busy_conversation_counts_but_does_not_lock(
        self, store: SessionStore
    ) -> None:
        async with store.lock(ANA):  # another turn (another process) is running
            start = await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)
            assert start == TurnStart(claimed=True, hits=1, locked=False)

    async def test_busy_turns_are_served_in_the_order_they_opened(
        self, store: SessionStore
    ) -> None:
        """The line is the order of ``open_turn``, not the order in which waiters start."""
        first = await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)
        second = await store.open_turn(ANA, "ev2", rate_scope="r:ana", rate_window=60, **LIMITS)
        third = await store.open_turn(ANA, "ev3", rate_scope="r:ana", rate_window=60, **LIMITS)
        assert (first.locked, second.locked, third.locked) == (True, False, False)
        assert None not in (first.ticket, second.ticket, third.ticket)
        served: list[str] = []

        async def turn(name: str, start: TurnStart) -> None:
            async with store.lock(ANA, timeout=5, wait=5, ticket=start.ticket):
                served.append(name)
                await store.save_and_release(ANA, _session(f"s{name}"), DAY, start.ticket)
            await store.release(ANA, start.ticket)  # given back already: nothing happens

        later = [asyncio.create_task(turn("3", third)), asyncio.create_task(turn("2", second))]
        await asyncio.sleep(0.05)
        assert served == []
        await store.save_and_release(ANA, _session("s1"), DAY, first.ticket)
        await asyncio.wait_for(asyncio.gather(*later), timeout=5)
        assert served == ["2", "3"]
        async with store.lock(ANA, wait=0):  # the last turn freed it
            pass

    async def test_a_turn_in_flight_is_in_the_journal_until_its_save(
        self, store: SessionStore
    ) -> None:
        opened = await store.open_turn(
            ANA, "ev1", rate_scope="r:ana", rate_window=60, journal='{"e": 1}', **LIMITS
        )
        assert await store.take_orphans(0) == []  # it holds the lock: alive
        await store.save(ANA, _session("client.menu"), DAY, closes="ev1")  # the outbox save
        await store.release(ANA, opened.ticket)
        assert await store.take_orphans(0) == []  # its outcome is durable: not an orphan

        opened = await store.open_turn(
            ANA, "ev2", rate_scope="r:ana", rate_window=60, journal='{"e": 2}', **LIMITS
        )
        await store.save_and_release(ANA, _session("client.menu"), DAY, opened.ticket, "ev2")
        assert await store.take_orphans(0) == []

    async def test_a_dead_turn_is_taken_once_and_its_event_can_be_claimed_again(
        self, store: SessionStore
    ) -> None:
        opened = await store.open_turn(
            ANA, "ev1", rate_scope="r:ana", rate_window=60, journal='{"e": 1}', **LIMITS
        )
        in_line = await store.open_turn(
            ANA, "ev2", rate_scope="r:ana", rate_window=60, journal='{"e": 2}', **LIMITS
        )
        assert not in_line.locked
        # Both turns end without a save (given back here) and nobody handles them again.
        await store.release(ANA, opened.ticket)
        if isinstance(store, MemoryStore):
            # ev2 was handed the lock: it looks alive until that lapses too.
            assert await store.take_orphans(0) == []
        async with store.lock(ANA, wait=1, ticket=in_line.ticket):
            pass  # (standing in for the lapse of the lock handed to the dead waiter)
        assert await store.take_orphans(3600) == []  # too recent for that caller
        taken = await store.take_orphans(0)
        assert sorted(o.event for o in taken) == ['{"e": 1}', '{"e": 2}']
        assert all(o.start is None for o in taken)  # no place left: handled as new events
        assert await store.take_orphans(0) == []  # taken once
        assert await store.claim_event("telegram", "ev1")  # handled as new by the taker
        assert await store.claim_event("telegram", "ev2")

    async def test_a_turn_dropped_from_the_journal_is_not_taken(self, store: SessionStore) -> None:
        opened = await store.open_turn(
            ANA, "ev1", rate_scope="r:ana", rate_window=60, journal='{"e": 1}', **LIMITS
        )
        await store.drop_turn(ANA, "ev1")
        await store.release(ANA, opened.ticket)
        assert await store.take_orphans(0) == []

    async def test_open_turn_of_a_repeat_claims_nothing_and_counts_nothing(
        self, store: SessionStore
    ) -> None:
        first = await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)
        await store.release(ANA)
        again = await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)
        assert first.claimed
        assert again == TurnStart(claimed=False, hits=0, locked=False)
        async with store.lock(ANA, wait=0):  # the repeat took no lock
            pass
        assert await store.hit_rate("r:ana", window=60) == 2  # nor counted

    async def test_open_turn_over_the_rate_limit_does_not_lock(self, store: SessionStore) -> None:
        opened = []
        for event in ("ev1", "ev2", "ev3"):
            opened.append(
                await store.open_turn(
                    ANA, event, rate_scope="r:ana", rate_window=60, rate_limit=2, lease=5
                )
            )
            await store.release(ANA)
        assert [(t.hits, t.locked) for t in opened] == [(1, True), (2, True), (3, False)]

    async def test_save_and_release_saves_and_frees_the_lock(self, store: SessionStore) -> None:
        await store.open_turn(ANA, "ev1", rate_scope="r:ana", rate_window=60, **LIMITS)
        await store.save_and_release(ANA, _session("client.menu"), DAY)
        loaded = await store.load(ANA)
        assert loaded is not None
        assert loaded.state == "client.menu"
        async with store.lock(ANA, wait=0):
            pass
        await store.release(ANA)  # already given back: nothing happens

    async def test_save_and_release_inside_lock_gives_it_back_once(
        self, store: SessionStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="bot.store"):
            async with store.lock(ANA):
                await store.save_and_release(ANA, _session("main.menu"), DAY)
                async with store.lock(ANA, wait=0):  # free already
                    pass
        assert "expired" not in caplog.text
        loaded = await store.load(ANA)
        assert loaded is not None
        assert loaded.state == "main.menu"

    async def test_a_held_lock_outlives_its_lease(self, backend: Backend) -> None:
        store = backend.store
        async with store.lock(ANA, timeout=0.6, wait=0):
            for _ in range(12):  # twice the lease, in real time (Redis) and on the clock
                await asyncio.sleep(0.1)
                backend.clock.advance(0.1)
            with pytest.raises(LockTimeout):
                async with store.lock(ANA, wait=0):
                    pytest.fail("a lock still held lapsed after its lease")
        async with store.lock(ANA, wait=0):
            pass

    async def test_rate_counter_counts_hits_per_window(self, backend: Backend) -> None:
        store = backend.store
        counts = [await store.hit_rate("telegram:1001", window=60) for _ in range(3)]
        assert counts == [1, 2, 3]
        assert await store.hit_rate("telegram:2002", window=60) == 1
        # Rate and lockout counters never share a key.
        assert await store.failures("telegram:1001") == 0

        await backend.elapse(61, redis_key("rate", "telegram:1001"))
        assert await store.hit_rate("telegram:1001", window=60) == 1

    async def test_topic_maps_to_its_conversation(self, store: SessionStore) -> None:
        await store.set_topic(5501, ANA)
        await store.set_topic(5502, LUIS)

        assert await store.get_topic(5501) == ANA
        assert await store.get_topic(5502) == LUIS
        assert await store.get_topic(5503) is None

    async def test_a_promise_is_remembered_per_service_until_its_date(
        self, backend: Backend
    ) -> None:
        store, now = backend.store, backend.now()
        await store.remember(11, date(2026, 11, 27), [88014, 88015], until=now + 3600)
        await store.remember(13, date(2026, 11, 30), [88018], until=now + 7200)

        assert await store.active(11) == Promise(date(2026, 11, 27), (88014, 88015))
        assert await store.active(13) == Promise(date(2026, 11, 30), (88018,))
        assert await store.active(12) is None

        await backend.elapse(3601, promise_key(11))
        assert await store.active(11) is None
        assert await store.active(13) is not None

    async def test_a_later_promise_replaces_the_stored_one(self, store: SessionStore) -> None:
        await store.remember(11, date(2026, 11, 27), [88014], until=2_000_000_000)
        await store.remember(11, date(2026, 11, 27), [88014, 88015], until=2_000_000_000)
        assert await store.active(11) == Promise(date(2026, 11, 27), (88014, 88015))

    async def test_a_promise_already_past_is_not_stored(self, backend: Backend) -> None:
        await backend.store.remember(11, date(2026, 11, 27), [88014], until=backend.now() - 1)
        assert await backend.store.active(11) is None

    async def test_an_unreadable_promise_reads_as_none(self, backend: Backend) -> None:
        await backend.put_raw(promise_key(11), "{not json")
        assert await backend.store.active(11) is None

    async def test_a_promise_expires_with_its_date_in_redis(self, backend: Backend) -> None:
        if backend.admin is None:
            pytest.skip("Redis only: the key's TTL")
        await backend.store.remember(11, date(2026, 11, 27), [88014], until=backend.now() + 90)
        assert 80_000 < await backend.pttl(promise_key(11)) <= 90_000

    async def test_scan_yields_every_live_conversation_and_nothing_else(
        self, backend: Backend
    ) -> None:
        store = backend.store
        keys = [ConvKey("telegram", str(i)) for i in range(450)]  # more than one SCAN batch
        await asyncio.gather(*(store.save(k, _session(n=i), ttl=DAY) for i, k in enumerate(keys)))
        await store.save(LUIS, _session(), ttl=10)
        await store.claim_event("telegram", "1")
        await store.set_topic(1, ANA)
        await store.register_failure("doc:1", window=60)
        await backend.elapse(11, conv_key(LUIS))

        found = {k: s async for k, s in store.scan_conversations()}

        assert set(found) == set(keys)
        assert found[ConvKey("telegram", "7")] == _session(n=7)

    async def test_corrupt_session_raises_session_corrupt(self, backend: Backend) -> None:
        store = backend.store
        await backend.put_raw(conv_key(ANA), "{not json")
        await store.save(LUIS, _session(), ttl=DAY)

        with pytest.raises(SessionCorrupt, match=str(ANA)):
            await store.load(ANA)
        # One bad value must not stop the sweeper from seeing the others.
        assert [k async for k, _ in store.scan_conversations()] == [LUIS]

    async def test_ping_answers_true_when_the_backend_is_up(self, store: SessionStore) -> None:
        assert await store.ping() is True


async def test_memory_store_forgets_expired_dedupe_marks(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(600):
        await store.claim_event("telegram", str(i), ttl=60)
    clock.advance(61)
    for i in range(600, 1200):
        await store.claim_event("telegram", str(i), ttl=60)
    # The first 600 marks expired unread; a long-running demo must not keep them forever.
    assert len(store._values) < 1000


class TestRedisStore:
    """What only the Redis store has to show."""

    @pytest.fixture
    async def redis_store(self) -> AsyncIterator[RedisStore]:
        admin = await _redis_or_skip(_redis_url())
        await admin.flushdb()
        store = RedisStore.from_url(_redis_url())
        try:
            yield store
        finally:
            await store.aclose()
            await admin.aclose()

    async def test_store_survives_its_connection_being_killed(
        self, redis_store: RedisStore
    ) -> None:
        await redis_store.save(ANA, _session(), ttl=DAY)
        first_id = await redis_store.client.client_id()
        admin = Redis.from_url(_redis_url())
        try:
            assert await admin.client_kill_filter(_id=str(first_id)) == 1
        finally:
            await admin.aclose()

        assert await redis_store.load(ANA) == _session()
        assert await redis_store.client.client_id() != first_id  # it did reconnect

    async def test_values_are_one_json_string_per_conversation(
        self, redis_store: RedisStore
    ) -> None:
        await redis_store.save(ANA, _session(service_id=10), ttl=DAY)
        raw = await redis_store.client.get("wispbot:conv:telegram:1001")
        assert raw is not None
        assert json.loads(raw) == {
            "state": "client_menu",
            "data": {"service_id": 10},
            "lang": "es",
            "verified_until": None,
            "updated_at": 1_750_000_000.5,
            "outbox": [],
            "v": 1,
        }

    async def test_unreachable_redis_is_store_unavailable(self) -> None:
        store = RedisStore.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
        try:
            assert await store.ping() is False
            with pytest.raises(StoreUnavailable):
                await store.load(ANA)
        finally:
            await store.aclose()

    async def test_sentinel_url_builds_a_sentinel_backed_client(self) -> None:
        store = RedisStore.from_url(
            "redis+sentinel://:s3cret@sentinel-a:26379,sentinel-b:26380/mymaster/2"
        )
        try:
            pool = store.client.connection_pool
            assert isinstance(pool, SentinelConnectionPool)
            assert pool.service_name == "mymaster"
            assert pool.connection_kwargs["db"] == 2
            assert pool.connection_kwargs["password"] == "s3cret"
            hosts = [
                (
                    s.connection_pool.connection_kwargs["host"],
                    s.connection_pool.connection_kwargs["port"],
                )
                for s in pool.sentinel_manager.sentinels
            ]
            assert hosts == [("sentinel-a", 26379), ("sentinel-b", 26380)]
        finally:
            await store.aclose()


class TestSentinelUrl:
    def test_defaults_port_and_db(self) -> None:
        hosts, service, db, auth = parse_sentinel_url("redis+sentinel://s1,[::1]:26390/main")
        assert (hosts, service, db, auth) == ([("s1", 26379), ("::1", 26390)], "main", 0, {})

    def test_user_password_and_sentinel_password(self) -> None:
        _, _, _, auth = parse_sentinel_url(
            "redis+sentinel://bot:p%40ss@s1:26379/main?sentinel_password=x"
        )
        assert auth == {"username": "bot", "password": "p@ss", "sentinel_password": "x"}

    @pytest.mark.parametrize(
        "url",
        [
            "redis+sentinel://s1:26379",  # no service name
            "redis+sentinel:///main",  # no sentinel
            "redis+sentinel://s1:port/main",
            "redis+sentinel://s1/main/zero",
            "redis+sentinel://s1/main/0/extra",
        ],
    )
    def test_bad_urls_are_refused(self, url: str) -> None:
        with pytest.raises(ValueError, match=r"sentinel URL|expected"):
            parse_sentinel_url(url)


class TestKeysAndSessions:
    def test_every_key_comes_from_one_builder(self) -> None:
        assert conv_key(ANA) == "wispbot:conv:telegram:1001"
        assert redis_key("lock", "whatsapp", "573001112233") == "wispbot:lock:whatsapp:573001112233"
        assert redis_key("seen", "telegram", "77") == "wispbot:seen:telegram:77"
        assert redis_key("topic", "5501") == "wispbot:topic:5501"
        assert promise_key(11) == "wispbot:promise:11"
        assert redis_key("lockout", "123456") == "wispbot:lockout:123456"
        with pytest.raises(ValueError, match="non-empty"):
            redis_key("conv", "telegram", "")

    def test_from_json_ignores_unknown_keys_and_fills_defaults(self) -> None:
        raw = b'{"state": "verify", "future_field": [1], "data": {"doc": "123"}}'
        assert Session.from_json(raw) == Session(state="verify", data={"doc": "123"})

    @pytest.mark.parametrize(
        "raw",
        [
            "",
            "[1, 2]",
            '{"state": 3}',
            '{"data": []}',
            '{"verified_until": "soon"}',
            '{"updated_at": true}',
            '{"outbox": ["hola"]}',
            b"\xff\xfe",
        ],
    )
    def test_from_json_refuses_what_is_not_a_session(self, raw: str | bytes) -> None:
        with pytest.raises(SessionCorrupt):
            Session.from_json(raw)

    async def test_no_redis_url_means_memory_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="bot.store"):
            store = make_store(None)
        assert isinstance(store, MemoryStore)
        assert "REDIS_URL is not set" in caplog.text

    async def test_a_redis_url_means_the_redis_store(self) -> None:
        store = make_store("redis://127.0.0.1:6379/15")  # built lazily: nothing connects yet
        try:
            assert isinstance(store, RedisStore)
        finally:
            await store.aclose()
