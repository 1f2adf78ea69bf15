"""The Redis store's core: the client, the auto-pipeline, errors mapped, this process's key."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from bot.store.autopipe import AutoPipeline, Queue
from bot.store.connection import connect
from bot.store.errors import StoreError, StoreUnavailable
from bot.store.interfaces import SessionStore
from bot.store.keys import DEFAULT_TOPIC_TTL, Clock, _check_ttl, _ms, _queue_of, redis_key
from bot.store.lease import _Hold, _LeaseKeeper
from bot.store.scripts import (
    ABANDON,
    ACQUIRE_LOAD,
    ADOPT,
    LEAVE,
    MOVE,
    OPEN_TURN,
    PUSH_INBOX,
    RELEASE,
    RENEW,
    SAVE_DONE,
    SAVE_RELEASE,
    TAKE_ORPHAN,
    WAIT_TURN,
    WINDOW_INCR,
)

_SCAN_BATCH = 200
_PING_DEADLINE = 2.0

_DEFAULT_LEASE = 5.0  # a process key's lease before its first turn said otherwise
_MAX_TRIES = 2  # a message whose process died is taken over once: one that kills every
# process handling it is not tried forever


def _lrange(name: str) -> Queue:
    return lambda p: p.lrange(name, 0, -1)


def _set_px(name: str, px: int) -> Queue:
    return lambda p: p.set(name, 1, px=px)


def _exists(name: str) -> Queue:
    return lambda p: p.exists(name)


def _unavailable(what: str, err: Exception) -> StoreUnavailable:
    # The error text names host and port at most; redis-py never puts the password in it.
    return StoreUnavailable(f"session store unavailable ({what}): {type(err).__name__}: {err}")


class RedisCore(SessionStore):
    """What every part of the Redis store shares: the client, its pipeline, this process."""

    def __init__(
        self,
        redis: Redis,
        *,
        clock: Clock = time.time,
        sentinel: Sentinel | None = None,
        topic_ttl: int = DEFAULT_TOPIC_TTL,
    ) -> None:
        self._redis = redis
        self._topic_ttl = _check_ttl(topic_ttl, "topic_ttl")
        self._pipe = AutoPipeline(redis)
        self._clock = clock
        self._sentinel = sentinel  # closed with the store when from_url built it
        self._release = self._pipe.register(RELEASE)
        self._acquire_load = self._pipe.register(ACQUIRE_LOAD)
        self._wait_turn = self._pipe.register(WAIT_TURN)
        self._abandon = self._pipe.register(ABANDON)
        self._leave = self._pipe.register(LEAVE)
        # Session JSON read together with a lock this process holds (conv key -> raw or None),
        # handed to the next ``load`` of that conversation; dropped by a save or the release.
        self._prefetched: dict[str, bytes | str | None] = {}
        self._window_incr = self._pipe.register(WINDOW_INCR)
        self._open_turn = self._pipe.register(OPEN_TURN)
        self._save_release = self._pipe.register(SAVE_RELEASE)
        self._save_done = self._pipe.register(SAVE_DONE)
        self._move = self._pipe.register(MOVE)
        self._take_orphan = self._pipe.register(TAKE_ORPHAN)
        self._adopt = self._pipe.register(ADOPT)
        self._renew = self._pipe.register(RENEW)
        self._push_inbox = self._pipe.register(PUSH_INBOX)
        self._leases = _LeaseKeeper(self._extend)
        # This process's name in its tokens, and its key kept alive while it runs.
        self._process = secrets.token_hex(6)
        self._alive_key = redis_key("alive", self._process)
        self._alive_lease = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        # Tokens of open_turn calls not yet answered: a retry of the call reuses its token, so
        # it finds its own claim when the first call ran and only its answer was lost.
        self._opening: dict[tuple[str, str], str] = {}

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock = time.time, topic_ttl: int = DEFAULT_TOPIC_TTL
    ) -> Self:
        """Connect lazily to redis://, rediss://, unix:// or redis+sentinel:// URLs."""
        redis, sentinel = connect(url)
        return cls(redis, clock=clock, sentinel=sentinel, topic_ttl=topic_ttl)

    @property
    def client(self) -> Redis:
        """The underlying redis-py client (for readiness details and tests)."""
        return self._redis

    @property
    def pipeline(self) -> AutoPipeline:
        """The auto-pipeline this store's commands share (the notice registry's reads on a
        turn's path ride it too: one trip with the turn's other commands)."""
        return self._pipe

    @contextmanager
    def _wrap(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as err:
            raise _unavailable(what, err) from err

    async def _call(self, what: str, queue: Queue) -> Any:
        # ``_wrap`` spelled out: a turn makes a handful of these calls, and a generator-based
        # context manager per call was a measurable share of its CPU.
        try:
            return await self._pipe.run(queue)
        except (RedisError, OSError) as err:
            raise _unavailable(what, err) from err

    def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Queue:
        return self._pipe.script(script, keys, args)

    def _token(self, journalled: str | None) -> str:
        """A new place's token: this process, a random part, and the event whose journal entry
        may keep it (``journalled``; none for an agent's message or a second try)."""
        kept = "n" if journalled is None else f"j{journalled}"
        return f"{self._process}.{secrets.token_hex(8)}.{kept}"

    def _keep_alive(self, lease: float) -> None:
        """Keep this process's key alive (from its first turn on) every third of a lease."""
        self._alive_lease = max(self._alive_lease, lease)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        name = self._alive_key
        while True:
            px = _ms(self._alive_lease)
            # Redis down: every process's key lapses alike; tried again shortly.
            with contextlib.suppress(StoreError):
                await self._call("alive", _set_px(name, px))
            await asyncio.sleep(self._alive_lease / 3)

    async def _extend(self, holds: list[_Hold]) -> list[bool]:
        args: list[str | int] = []
        names: list[str] = []
        for hold in holds:
            args += [hold.token, _ms(hold.lease)]
            names += [hold.name, _queue_of(hold.name)]
        kept = await self._call("renew", self._script(self._renew, names, args))
        return [bool(k) for k in kept]

    async def ping(self) -> bool:
        """True when Redis answers PING within a short deadline."""
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), _PING_DEADLINE))
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        """Close the client (and the sentinel connections when this store made them)."""
        await self._leases.aclose()
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            # What this process leaves in lines is another's to take over at once.
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(self._alive_key)
        await self._pipe.aclose()
        await self._redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
