"""The agents' relay outboxes: one durable list per forum topic, in Redis or in memory.

Keys (``wispbot:relay:...``, each with a TTL): ``relay:{thread}`` the topic's pending relays,
``relay:due`` a sorted set of the topics with pending relays scored by their oldest one,
``relay:lock:{thread}`` one sender a topic across processes (a short lease),
``relay:told:{thread}`` the customer was told once that the agents are slow,
``relay:seen:{channel}:{event}`` a customer's message is queued once. ``bot.relay`` sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.store.interfaces import SessionStore
from bot.store.keys import PREFIX
from bot.store.redis_store import RedisStore

Entry = dict[str, Any]  # {"at": enqueued, "text": ...} or {"at", "inbound": json, "label": ...}

# A topic's sender lock; renewed every third of it while a send runs (or waits out a 429), so
# it can be short: a process killed mid-send holds up the topic's relays at most this long (as
# long as a conversation's lock, ``bot.engine.LOCK_LEASE_SECONDS``).
LEASE_SECONDS = 5.0
TOLD_TTL = 24 * 3600
OUTBOX_TTL = 7 * 24 * 3600  # an outbox nobody can send (a deleted topic) does not live forever


class OutboxError(Exception):
    """The outbox could not be reached."""


class Outbox(Protocol):
    """Pending relays per topic, durable when on Redis."""

    async def push(self, thread: int, entry: Entry, event: str | None = None) -> bool:
        """Append one relay to the topic's outbox; False when ``event`` was queued already (a
        turn handled again after its process died between this and its save)."""
        ...

    async def due(self, limit: int) -> list[tuple[int, float]]:
        """Topics with pending relays and the time of their oldest one, oldest first."""
        ...

    async def peek(self, thread: int, count: int) -> list[Entry]:
        """The first ``count`` pending relays of a topic (left in place)."""
        ...

    async def ack(self, thread: int, count: int) -> None:
        """Drop the first ``count`` relays of a topic (they were sent)."""
        ...

    async def replace_head(self, thread: int, entry: Entry) -> None:
        """Put ``entry`` in place of the topic's first relay."""
        ...

    def claim(self, thread: int) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold the topic's sender lock for the block (False: another sender has it)."""
        ...

    async def first_tell(self, thread: int) -> bool:
        """True once per handoff: the customer has not been told yet that agents are slow."""
        ...

    async def reset_tell(self, thread: int) -> None:
        """A new handoff in the topic: the customer may be told again."""
        ...


def _key(*parts: str) -> str:
    return ":".join((PREFIX, "relay", *parts))


DUE_KEY = _key("due")

# KEYS: outbox, due, seen (or none); ARGV: entry, ttl, at, thread. Append once per event.
_PUSH = """
if KEYS[3] and not redis.call('SET', KEYS[3], 1, 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[4])
return 1
"""
# KEYS: outbox, due; ARGV: count, thread. Trim what was sent; the topic stays due, scored by the
# relay now first, or leaves the set when nothing is pending.
_ACK = """
if tonumber(ARGV[1]) > 0 then redis.call('LTRIM', KEYS[1], ARGV[1], -1) end
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[2], cjson.decode(head)['at'], ARGV[2])
return 1
"""
# KEYS: lock; ARGV: token, lease ms. Renew or give back only one's own lock.
RENEW_OWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
GIVE_BACK_OWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisOutbox:
    """The outbox in Redis, shared by every process of the service."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._push = redis.register_script(_PUSH)
        self._ack = redis.register_script(_ACK)
        self._renew = redis.register_script(RENEW_OWN)
        self._give_back = redis.register_script(GIVE_BACK_OWN)

    @contextlib.contextmanager
    def _wrap(self, what: str) -> Any:
        try:
            yield
        except (RedisError, OSError) as err:
            msg = f"relay outbox unavailable ({what}): {type(err).__name__}"
            raise OutboxError(msg) from err

    async def push(self, thread: int, entry: Entry, event: str | None = None) -> bool:
        """RPUSH the relay and mark the topic due (its score: the oldest pending relay)."""
        keys = [_key(str(thread)), DUE_KEY]
        if event is not None:
            keys.append(_key("seen", event))
        args: list[bytes | int | float | str] = [
            orjson.dumps(entry),
            OUTBOX_TTL,
            float(entry["at"]),
            str(thread),
        ]
        with self._wrap("push"):
            return bool(await self._push(keys=keys, args=args))

    async def due(self, limit: int) -> list[tuple[int, float]]:
        """Oldest first."""
        with self._wrap("due"):
            rows: list[Any] = await self.redis.zrange(DUE_KEY, 0, limit - 1, withscores=True)
        return [(int(member), float(score)) for member, score in rows]

    async def peek(self, thread: int, count: int) -> list[Entry]:
        """LRANGE of the first ``count``."""
        with self._wrap("peek"):
            raw = await self.redis.lrange(_key(str(thread)), 0, count - 1)
        return [orjson.loads(item) for item in raw]

    async def ack(self, thread: int, count: int) -> None:
        """Trim and rescore in one script."""
        with self._wrap("ack"):
            await self._ack(keys=[_key(str(thread)), DUE_KEY], args=[count, str(thread)])

    async def replace_head(self, thread: int, entry: Entry) -> None:
        """LSET 0."""
        with self._wrap("replace"):
            await self.redis.lset(_key(str(thread)), 0, orjson.dumps(entry).decode())

    @contextlib.asynccontextmanager
    async def claim(self, thread: int) -> AsyncIterator[bool]:
        """The thread's lock, renewed while the block runs (``held_lease``)."""
        name, token = _key("lock", str(thread)), secrets.token_hex(8)
        with self._wrap("claim"):
            taken = await self.redis.set(name, token, nx=True, px=int(LEASE_SECONDS * 1000))
        async with held_lease(self._renew, self._give_back, name, token, taken, LEASE_SECONDS):
            yield bool(taken)

    async def first_tell(self, thread: int) -> bool:
        """SET NX."""
        with self._wrap("tell"):
            return bool(await self.redis.set(_key("told", str(thread)), 1, nx=True, ex=TOLD_TTL))

    async def reset_tell(self, thread: int) -> None:
        """DEL."""
        with self._wrap("tell"):
            await self.redis.delete(_key("told", str(thread)))


@contextlib.asynccontextmanager
async def held_lease(
    renew: Any, give_back: Any, name: str, token: str, taken: Any, lease: float
) -> AsyncIterator[None]:
    """A lease taken with SET NX PX and ``token`` (``taken``), renewed every third of ``lease``
    seconds while the block runs (``RENEW_OWN``) and given back after it (``GIVE_BACK_OWN``);
    nothing to do when it was not taken."""
    if not taken:
        yield
        return
    lease_ms = int(lease * 1000)

    async def keep() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(RedisError, OSError):
                await renew(keys=[name], args=[token, lease_ms])

    keeper = asyncio.create_task(keep())
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(RedisError, OSError):
            await give_back(keys=[name], args=[token])


@dataclass
class MemoryOutbox:
    """The outbox in memory (no REDIS_URL: one process, lost at exit like the sessions)."""

    lists: dict[int, list[Entry]] = field(default_factory=dict)
    told: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)

    async def push(self, thread: int, entry: Entry, event: str | None = None) -> bool:
        """Append once per event."""
        if event is not None:
            if event in self.seen:
                return False
            self.seen.add(event)
        self.lists.setdefault(thread, []).append(entry)
        return True

    async def due(self, limit: int) -> list[tuple[int, float]]:
        """Oldest first."""
        found = sorted((float(e[0]["at"]), t) for t, e in self.lists.items() if e)
        return [(thread, at) for at, thread in found[:limit]]

    async def peek(self, thread: int, count: int) -> list[Entry]:
        """The first ``count``."""
        return list(self.lists.get(thread, [])[:count])

    async def ack(self, thread: int, count: int) -> None:
        """Drop the first ``count``."""
        pending = self.lists.get(thread, [])
        del pending[:count]
        if not pending:
            self.lists.pop(thread, None)

    async def replace_head(self, thread: int, entry: Entry) -> None:
        """Replace the first."""
        self.lists[thread][0] = entry

    @contextlib.asynccontextmanager
    async def claim(self, thread: int) -> AsyncIterator[bool]:
        """A set of held topics."""
        if thread in self.held:
            yield False
            return
        self.held.add(thread)
        try:
            yield True
        finally:
            self.held.discard(thread)

    async def first_tell(self, thread: int) -> bool:
        """Once per handoff."""
        first = thread not in self.told
        self.told.add(thread)
        return first

    async def reset_tell(self, thread: int) -> None:
        """Forget."""
        self.told.discard(thread)


def make_outbox(store: SessionStore) -> Outbox:
    """The outbox beside the session store: in Redis when the sessions are."""
    if isinstance(store, RedisStore):
        return RedisOutbox(store.client)
    return MemoryOutbox()
