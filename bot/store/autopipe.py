"""Auto-pipelining for the session store: commands issued in one event-loop tick share a trip.

Under load many conversations talk to Redis at once. redis-py spends most of a command's cost
in Python around the socket (taking a pooled connection, packing, one write, waking the task
for its reply); a pipeline pays that once for all of its commands. ``AutoPipeline.run`` queues
a command and, at the end of the current loop tick, every queued command leaves in one
non-transactional pipeline on one pooled connection. Each caller still gets its own result or
its own error; nothing waits for a batch to fill (the flush is the next tick), so a lone
command costs about what it did before.

Scripts go by ``EVALSHA``. When Redis answers ``NOSCRIPT`` (it restarted and lost its script
cache), the batch loads every registered script and sends those commands again, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import ScriptTextT

Queue = Callable[[Pipeline], object]


class AutoPipeline:
    """Batches commands per loop tick into one pipeline each."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[Queue, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._scripts: dict[str, ScriptTextT] = {}  # sha -> source, loaded again after NOSCRIPT

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
        """Queue one command (``queue`` adds it to a pipeline); its decoded reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((queue, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        batch = [(q, f) for q, f in batch if not f.done()]  # callers cancelled meanwhile
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Queue, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._execute([q for q, _ in batch])
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
        except BaseException:  # this task was cancelled (shutdown): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, queues: list[Queue]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                queue(pipe)
            return list(await pipe.execute(raise_on_error=False))

    async def _load_scripts(self) -> None:
        for source in self._scripts.values():
            await self._redis.script_load(source)

    async def aclose(self) -> None:
        """Let batches already sent finish."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
