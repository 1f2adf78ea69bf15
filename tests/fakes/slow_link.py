"""A TCP proxy that can make one process's link to a server slow, on demand.

``SlowLink(host, port)`` listens on a free local port and forwards every connection to the
server. While ``delay`` is above zero, each chunk the client sends reaches the server that many
seconds later (in order): the process behind the link sees every round trip take ``delay``
longer, as if its network to Redis were congested or its event loop late. Replies are forwarded
as they come; while ``cut_after`` is set, each connection passes that many more bytes of replies
and is closed (the server went away in the middle of a reply).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class SlowLink:
    """A local TCP proxy to ``host:port`` with an adjustable one-way delay."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.delay = 0.0
        self.cut_after: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listen_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        except OSError:
            client_w.close()
            return
        up = self._spawn(self._pump(client_r, server_w, delayed=True))
        down = self._spawn(self._pump(server_r, client_w, delayed=False))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        """Copy until EOF; a delayed chunk is written ``delay`` s after it was read, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        passed = 0

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                writer.write(chunk)
                await writer.drain()
                queue.task_done()

        sender = self._spawn(send())
        try:
            while chunk := await reader.read(65536):
                cut = None if delayed else self.cut_after
                if cut is None:
                    passed = 0
                else:
                    chunk = chunk[: cut - passed]
                    passed += len(chunk)
                queue.put_nowait((loop.time() + (self.delay if delayed else 0.0), chunk))
                if cut is not None and passed >= cut:
                    break  # the connection closes here, in the middle of a reply
            await queue.join()  # EOF: what was read still goes out
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
