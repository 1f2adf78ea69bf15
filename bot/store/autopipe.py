"""Auto-pipelining for the session store: commands issued in one event-loop tick share a trip.

Under load many conversations talk to Redis at once. redis-py spends most of a command's cost
in Python around the socket (taking a pooled connection, packing, one write, waking the task
for its reply); a pipeline pays that once for all of its commands. ``AutoPipeline.run`` queues
a command and, at the end of the current loop tick, every queued command leaves in one write
on one connection. Each caller still gets its own result or its own error; nothing waits for a
batch to fill (the flush is the next tick), so a lone command costs about what it did before.

Why by hand: redis-py has no auto-pipelining, and its ``Pipeline`` pays on every batch for what
a general-purpose pipeline needs and this one does not: a new object and its reset, a connection
taken from the pool and given back (a condition and a lock, a wait deadline, observability
events) and a deadline of its own around every reply. Here a batch is put together from
redis-py's own parts: its command methods record themselves on a ``Pipeline`` that is never
executed (so callers still write ``lambda p: p.get(name)``); its connections, taken from the
client's pool and a few kept between batches (connected, authenticated and given their
database by redis-py; a Sentinel pool's find the master), checked before use as the pool
checks them; their ``pack_command``, ``send_packed_command`` and ``read_response``; the
connection's retry policy; the client's response callbacks. The whole batch has one deadline,
the connection's ``socket_timeout``. A connection whose batch failed or was cancelled midway is
disconnected before anything may use it again, so no reply is ever left for another batch.

Scripts go by ``EVALSHA``. When Redis answers ``NOSCRIPT`` (it restarted and lost its script
cache), the batch loads every registered script and sends those commands again, once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.commands.core import AsyncScript
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import ScriptTextT

Queue = Callable[[Pipeline], object]
Command = tuple[tuple[Any, ...], Mapping[str, Any]]  # as a redis-py Pipeline records one

_KEEP = 8  # connections kept between batches: more than this many at once go back to the pool
# What redis-py's parse_response takes out of a command's options before its response callback.
_NOT_OPTIONS = frozenset({EMPTY_RESPONSE, NEVER_DECODE, "keys"})


class AutoPipeline:
    """Batches commands per loop tick into one write each."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pool = redis.connection_pool
        self._callbacks = redis.response_callbacks
        # Never executed: its command methods record (args, options), as in any redis-py pipeline.
        self._recorder = redis.pipeline(transaction=False)
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._scripts: dict[str, ScriptTextT] = {}  # sha -> source, loaded again after NOSCRIPT
        self._idle: list[AbstractConnection] = []  # clean, taken from the pool, kept for batches

    def register(self, source: str) -> AsyncScript:
        """A Lua script of the store (registered at start-up): every registered script is loaded
        again when Redis answers NOSCRIPT to any one."""
        script = self._redis.register_script(source)
        self._scripts[script.sha] = script.script
        return script

    def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Queue:
        """The queueing function of one ``EVALSHA`` of a registered ``script``."""
        sha = script.sha
        return lambda pipe: pipe.evalsha(sha, len(keys), *keys, *args)

    async def run(self, queue: Queue) -> Any:
        """Queue one command (``queue`` calls one command method of a pipeline); its decoded
        reply, or its own error."""
        command = self._record(queue)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _record(self, queue: Queue) -> Command:
        stack = self._recorder.command_stack
        try:
            queue(self._recorder)
            [command] = stack  # one command per queueing function
        finally:
            stack.clear()
        return command

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        batch = [(c, f) for c, f in batch if not f.done()]  # callers cancelled meanwhile
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._sent, batch))

    def _sent(
        self, batch: list[tuple[Command, asyncio.Future[Any]]], task: asyncio.Task[None]
    ) -> None:
        self._tasks.discard(task)
        # A batch cancelled (at shutdown), even before it started, cancels the callers it did
        # not answer.
        for _, future in batch:
            future.cancel()

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([c for c, _ in batch])
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:
                await self._load_scripts()
                again = await self._execute([batch[i][0] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except Exception as err:  # the connection failed: every command of the batch did
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """Each command's decoded reply or its own error, in order; raises when the connection
        failed (after the connection's retry policy, as a redis-py pipeline does)."""
        conn = await self._take()
        try:
            results: list[Any] = await conn.retry.call_with_retry(
                lambda: self._exchange(conn, commands), _again
            )
        except BaseException:
            # Disconnected already (see _exchange): nothing unread goes back to the pool.
            await asyncio.shield(self._pool.release(conn))
            raise
        reconnect: bool = conn.should_reconnect()  # type: ignore[no-untyped-call]
        if len(self._idle) < _KEEP and not reconnect:
            self._idle.append(conn)
        else:
            await asyncio.shield(self._pool.release(conn))
        return results

    async def _take(self) -> AbstractConnection:
        """A connection kept from an earlier batch, checked as the pool checks the ones it hands
        out (the server may have closed it: a restart); else one from the pool."""
        if not self._idle:
            take = self._pool.get_connection
            fresh: AbstractConnection = await take()  # type: ignore[no-untyped-call]
            return fresh
        conn = self._idle.pop()
        try:
            await self._pool.ensure_connection(conn)
        except BaseException:
            await asyncio.shield(self._pool.release(conn))
            raise
        return conn

    async def _exchange(self, conn: AbstractConnection, commands: list[Command]) -> list[Any]:
        """One write of every command, then every reply, under one deadline."""
        try:
            if not conn.is_connected:
                # A try after a failed one. A Sentinel-managed connection asks for the master.
                await conn.connect()  # type: ignore[no-untyped-call]
            results: list[Any] = [None] * len(commands)
            packed: list[bytes] = []
            sent: list[int] = []
            for i, (args, _) in enumerate(commands):
                try:
                    packed += conn.pack_command(*args)
                except DataError as err:  # an argument Redis cannot take: only its caller fails
                    results[i] = err
                else:
                    sent.append(i)
            if not sent:
                return results
            async with asyncio.timeout(conn.socket_timeout) as deadline:
                try:
                    await conn.send_packed_command(packed, check_health=True)
                    for i in sent:
                        results[i] = await self._reply(conn, *commands[i])
                except asyncio.CancelledError:
                    if deadline.expired():
                        msg = f"no reply from Redis within {conn.socket_timeout} s"
                        raise RedisTimeoutError(msg) from None
                    raise
        except BaseException:
            await conn.disconnect(nowait=True)  # replies may be left unread: never reused so
            raise
        return results

    async def _reply(
        self, conn: AbstractConnection, args: tuple[Any, ...], options: Mapping[str, Any]
    ) -> Any:
        """What ``Redis.parse_response`` makes of one reply, without a deadline of its own."""
        try:
            response = await conn.read_response(
                disable_decoding=NEVER_DECODE in options, timeout=math.inf
            )
        except ResponseError as err:  # this command's error, not the connection's
            return options.get(EMPTY_RESPONSE, err)
        callback = self._callbacks.get(args[0])
        if callback is None:
            return response
        if options:
            options = {k: v for k, v in options.items() if k not in _NOT_OPTIONS}
        try:
            result = callback(response, **options)
            return await result if inspect.isawaitable(result) else result
        except Exception as err:  # the reply was read whole: only this command failed
            return err

    async def _load_scripts(self) -> None:
        for source in self._scripts.values():
            await self._redis.script_load(source)

    async def aclose(self) -> None:
        """Let batches already sent finish; give the kept connections back to the pool."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)


async def _again(_error: Exception) -> None:
    """Between tries of a batch: the failed connection is disconnected already, and the next
    try connects it again."""
