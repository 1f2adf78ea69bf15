"""The notices' registry (issue 15): who is subscribed to what, opt-outs, the notices' dedupe
marks and the once-per-tick claims, in Redis or in memory.

Keys (each with a TTL, so nothing outlives its use)::

    wispbot:sub:{topic}:{target}         a hash: conversation -> {"service_id", "until", "at"};
                                         expires with its last subscriber's ``until``
    wispbot:sub:{topic}:{target}:since   when the target's first subscriber came (SET NX): the
                                         identity of an outage ("outage:7:{since}")
    wispbot:sub:index:{topic}            a sorted set of the topic's targets, scored by their
                                         latest ``until`` (expired ones are pruned on read)
    wispbot:optout:{conv}                the conversation asked for no notices (long TTL)
    wispbot:notice:{event}:{conv}        a notice's dedupe mark: once per customer per event
    wispbot:notify:tick:{job}:{n}        one process runs tick ``n`` of a job (SET NX)
    wispbot:notify:run:{job}             the lease of the job's run under way (ticks do not
                                         overlap: a tick that finds it held is skipped)

The dialog writes through ``flows.ports.Subscriptions``; the runtime (``bot.notice_*``) reads
targets and subscribers, removes what it told, and marks what it sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.store.autopipe import AutoPipeline
from bot.store.errors import StoreUnavailable
from bot.store.interfaces import SessionStore
from bot.store.keys import PREFIX, Clock
from bot.store.outbox import GIVE_BACK_OWN, RENEW_OWN, held_lease
from bot.store.redis_store import RedisStore
from flows.types import ConvKey

OPTOUT_TTL = 400 * 24 * 3600  # an opt-out outlives any subscription by far
NOTICE_MARK_TTL = 60 * 24 * 3600  # a dedupe mark outlives the subscriptions it guards
GRACE = 24 * 3600  # a target's keys live this long after its last ``until``
RUN_LEASE = 15.0  # a job's run lease (renewed while it runs): a dead run blocks no longer


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One conversation subscribed to a target."""

    key: ConvKey
    service_id: int
    until: float
    at: float  # when it subscribed


class NoticeRegistry(Protocol):
    """``flows.ports.Subscriptions`` plus what the runtime reads and marks."""

    async def subscribe(
        self, topic: str, target: str, key: ConvKey, *, service_id: int, until: float
    ) -> None: ...
    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None: ...
    async def opt_out(self, key: ConvKey) -> None: ...
    async def opt_in(self, key: ConvKey) -> None: ...
    async def opted_out(self, key: ConvKey) -> bool: ...

    async def targets(self, topic: str) -> list[str]:
        """The topic's targets that still have a subscriber (not expired)."""
        ...

    async def subscribers(self, topic: str, target: str) -> list[Subscriber]:
        """The target's live subscribers, oldest first (expired ones are dropped)."""
        ...

    async def since(self, topic: str, target: str) -> float | None:
        """When the target's first subscriber (of its current run of subscribers) came."""
        ...

    async def drop(self, topic: str, target: str) -> None:
        """Forget the target and all its subscribers (its notice went out)."""
        ...

    async def mark(self, event: str, key: ConvKey) -> bool:
        """Mark a notice as sent to a conversation: True the first time only."""
        ...

    async def marked(self, event: str, key: ConvKey) -> bool:
        """Whether ``mark`` was already called for this event and conversation."""
        ...

    async def claim_tick(self, job: str, tick: int, ttl: int) -> bool:
        """True for exactly one caller per job and tick."""
        ...

    def running(self, job: str) -> AbstractAsyncContextManager[bool]:
        """Hold the job's run lease for the block (False: a run is under way elsewhere); a
        dead holder's lease lapses within ``RUN_LEASE`` s."""
        ...


def _k(*parts: str) -> str:
    return ":".join((PREFIX, *parts))


def _sub(topic: str, target: str) -> str:
    return _k("sub", topic, target)


def _entry(service_id: int, until: float, at: float) -> bytes:
    return orjson.dumps({"service_id": service_id, "until": until, "at": at})


def _subscriber(conv: str, raw: bytes | str) -> Subscriber:
    data = orjson.loads(raw)
    return Subscriber(
        ConvKey.parse(conv), int(data["service_id"]), float(data["until"]), float(data["at"])
    )


# KEYS: hash, since, index; ARGV: conv, entry, until, now, grace, target. The hash and its
# since-key expire with the latest ``until`` (plus a grace); the index scores the target so.
_SUBSCRIBE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'NX')
local latest = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[6]) or '0')
local untl = tonumber(ARGV[3])
if untl > latest then latest = untl end
redis.call('ZADD', KEYS[3], latest, ARGV[6])
local expire = math.ceil(latest + tonumber(ARGV[5]))
redis.call('EXPIREAT', KEYS[1], expire)
redis.call('EXPIREAT', KEYS[2], expire)
redis.call('EXPIREAT', KEYS[3], expire)
return 1
"""
# KEYS: hash, since, index; ARGV: conv, target. The last subscriber out takes the target along.
_UNSUBSCRIBE = """
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return 1
"""


class RedisRegistry:
    """The registry in Redis, shared by every process."""

    def __init__(
        self, redis: Redis, clock: Clock = time.time, pipeline: AutoPipeline | None = None
    ) -> None:
        self.redis = redis
        self.clock = clock
        # What a customer's turn asks (the reminder offer's opt-out check) rides the session
        # store's auto-pipeline, with the turn's other commands.
        self._pipeline = pipeline or AutoPipeline(redis)
        self._subscribe = redis.register_script(_SUBSCRIBE)
        self._unsubscribe = redis.register_script(_UNSUBSCRIBE)
        self._renew = redis.register_script(RENEW_OWN)
        self._give_back = redis.register_script(GIVE_BACK_OWN)

    @contextmanager
    def _wrap(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as err:
            msg = f"notice registry unavailable ({what}): {type(err).__name__}"
            raise StoreUnavailable(msg) from err

    async def subscribe(
        self, topic: str, target: str, key: ConvKey, *, service_id: int, until: float
    ) -> None:
        """One script: the entry, the since-key, the index, their TTLs."""
        keys = [_sub(topic, target), _sub(topic, target) + ":since", _k("sub", "index", topic)]
        now = self.clock()
        args: list[bytes | str | float] = [
            str(key),
            _entry(service_id, until, now),
            until,
            now,
            GRACE,
            target,
        ]
        with self._wrap("subscribe"):
            await self._subscribe(keys=keys, args=args)

    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None:
        """HDEL (and the target with its last subscriber)."""
        keys = [_sub(topic, target), _sub(topic, target) + ":since", _k("sub", "index", topic)]
        with self._wrap("unsubscribe"):
            await self._unsubscribe(keys=keys, args=[str(key), target])

    async def opt_out(self, key: ConvKey) -> None:
        """SET with a long TTL."""
        with self._wrap("opt_out"):
            await self.redis.set(_k("optout", str(key)), 1, ex=OPTOUT_TTL)

    async def opt_in(self, key: ConvKey) -> None:
        """DEL."""
        with self._wrap("opt_in"):
            await self.redis.delete(_k("optout", str(key)))

    async def opted_out(self, key: ConvKey) -> bool:
        """EXISTS."""
        name = _k("optout", str(key))
        with self._wrap("opted_out"):
            return bool(await self._pipeline.run(lambda pipe: pipe.exists(name)))

    async def targets(self, topic: str) -> list[str]:
        """Prune the expired, then ZRANGE."""
        index = _k("sub", "index", topic)
        with self._wrap("targets"):
            await self.redis.zremrangebyscore(index, "-inf", f"({self.clock()}")
            found = await self.redis.zrange(index, 0, -1)
        return [t.decode() if isinstance(t, bytes) else str(t) for t in found]

    async def subscribers(self, topic: str, target: str) -> list[Subscriber]:
        """HGETALL; expired entries are removed."""
        with self._wrap("subscribers"):
            raw = await self.redis.hgetall(_sub(topic, target))
        now = self.clock()
        found: list[Subscriber] = []
        expired: list[Subscriber] = []
        for conv, value in raw.items():
            name = conv.decode() if isinstance(conv, bytes) else str(conv)
            sub = _subscriber(name, value)
            (found if sub.until >= now else expired).append(sub)
        for sub in expired:
            await self.unsubscribe(topic, target, sub.key)
        return sorted(found, key=lambda s: (s.at, str(s.key)))

    async def since(self, topic: str, target: str) -> float | None:
        """GET."""
        with self._wrap("since"):
            raw = await self.redis.get(_sub(topic, target) + ":since")
        return None if raw is None else float(raw)

    async def drop(self, topic: str, target: str) -> None:
        """DEL the hash and since-key, ZREM from the index."""
        with self._wrap("drop"):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(_sub(topic, target), _sub(topic, target) + ":since")
                pipe.zrem(_k("sub", "index", topic), target)
                await pipe.execute()

    async def mark(self, event: str, key: ConvKey) -> bool:
        """SET NX EX."""
        with self._wrap("mark"):
            name = _k("notice", event, str(key))
            return bool(await self.redis.set(name, 1, nx=True, ex=NOTICE_MARK_TTL))

    async def marked(self, event: str, key: ConvKey) -> bool:
        """EXISTS."""
        with self._wrap("marked"):
            return bool(await self.redis.exists(_k("notice", event, str(key))))

    async def claim_tick(self, job: str, tick: int, ttl: int) -> bool:
        """SET NX EX."""
        with self._wrap("tick"):
            name = _k("notify", "tick", job, str(tick))
            return bool(await self.redis.set(name, 1, nx=True, ex=max(1, ttl)))

    @asynccontextmanager
    async def running(self, job: str) -> AsyncIterator[bool]:
        """The job's run lease, renewed while the block runs (``held_lease``)."""
        name, token = _k("notify", "run", job), secrets.token_hex(8)
        with self._wrap("run"):
            taken = await self.redis.set(name, token, nx=True, px=int(RUN_LEASE * 1000))
        async with held_lease(self._renew, self._give_back, name, token, taken, RUN_LEASE):
            yield bool(taken)


@dataclass
class MemoryRegistry:
    """The registry in one process's memory (no REDIS_URL), expiry against ``clock``."""

    clock: Clock = time.time
    subs: dict[tuple[str, str], dict[str, Subscriber]] = field(default_factory=dict)
    firsts: dict[tuple[str, str], float] = field(default_factory=dict)
    optouts: set[str] = field(default_factory=set)
    marks: set[tuple[str, str]] = field(default_factory=set)
    ticks: set[tuple[str, int]] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)

    async def subscribe(
        self, topic: str, target: str, key: ConvKey, *, service_id: int, until: float
    ) -> None:
        """Add or renew."""
        now = self.clock()
        self.subs.setdefault((topic, target), {})[str(key)] = Subscriber(
            key, service_id, until, now
        )
        self.firsts.setdefault((topic, target), now)

    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None:
        """Remove (and the target with its last subscriber)."""
        found = self.subs.get((topic, target), {})
        found.pop(str(key), None)
        if not found:
            await self.drop(topic, target)

    async def opt_out(self, key: ConvKey) -> None:
        """Remember."""
        self.optouts.add(str(key))

    async def opt_in(self, key: ConvKey) -> None:
        """Forget."""
        self.optouts.discard(str(key))

    async def opted_out(self, key: ConvKey) -> bool:
        """Membership."""
        return str(key) in self.optouts

    async def targets(self, topic: str) -> list[str]:
        """Targets with a live subscriber."""
        now = self.clock()
        return [
            target
            for (t, target), found in list(self.subs.items())
            if t == topic and any(s.until >= now for s in found.values())
        ]

    async def subscribers(self, topic: str, target: str) -> list[Subscriber]:
        """Live ones, oldest first; expired ones removed."""
        now = self.clock()
        found = list(self.subs.get((topic, target), {}).values())
        for sub in found:
            if sub.until < now:
                await self.unsubscribe(topic, target, sub.key)
        live = [s for s in found if s.until >= now]
        return sorted(live, key=lambda s: (s.at, str(s.key)))

    async def since(self, topic: str, target: str) -> float | None:
        """The first subscriber's time."""
        return self.firsts.get((topic, target))

    async def drop(self, topic: str, target: str) -> None:
        """Forget the target."""
        self.subs.pop((topic, target), None)
        self.firsts.pop((topic, target), None)

    async def mark(self, event: str, key: ConvKey) -> bool:
        """Once."""
        item = (event, str(key))
        if item in self.marks:
            return False
        self.marks.add(item)
        return True

    async def marked(self, event: str, key: ConvKey) -> bool:
        """Membership."""
        return (event, str(key)) in self.marks

    async def claim_tick(self, job: str, tick: int, ttl: int) -> bool:
        """Once."""
        if (job, tick) in self.ticks:
            return False
        self.ticks.add((job, tick))
        return True

    @asynccontextmanager
    async def running(self, job: str) -> AsyncIterator[bool]:
        """A set of running jobs."""
        if job in self.runs:
            yield False
            return
        self.runs.add(job)
        try:
            yield True
        finally:
            self.runs.discard(job)


def make_registry(store: SessionStore, clock: Clock = time.time) -> NoticeRegistry:
    """The registry beside the session store: in Redis when the sessions are."""
    if isinstance(store, RedisStore):
        return RedisRegistry(store.client, clock, store.pipeline)
    return MemoryRegistry(clock)
