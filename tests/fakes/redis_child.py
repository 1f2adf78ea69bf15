"""A ``redis-server`` of the test's own, as a child process that can be stopped and restarted.

The resilience e2e tests need a Redis they may take down in the middle of a conversation without
disturbing the shared server other suites use. Persistence is AOF only (``--save ""
--appendonly yes``) in a folder of the test's, so what was written before a stop is there after
the restart on the same port, as in a production deployment with AOF.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from e2e_harness import sigterm_and_wait
from redis.exceptions import RedisError

START_SECONDS = 10.0


def redis_server_path() -> str | None:
    """Where ``redis-server`` is on PATH, or None."""
    return shutil.which("redis-server")


class RedisChild:
    """``redis-server --port P --save "" --appendonly yes --dir D`` as a child process."""

    def __init__(
        self, executable: str, port: int, directory: Path, *, fsync: str = "everysec"
    ) -> None:
        self.executable = executable
        self.fsync = fsync  # appendfsync: "always" makes every acknowledged write survive SIGKILL
        self.port = port
        self.dir = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = START_SECONDS) -> None:  # noqa: ASYNC109
        """Start the server and wait (bounded) until it answers PING."""
        assert not self.running, "already running"
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        client = aioredis.from_url(self.url, socket_connect_timeout=1.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    msg = f"redis-server exited with {self.proc.returncode}:\n{self.logs()}"
                    raise AssertionError(msg)
                try:
                    if await client.ping():
                        return
                except (RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    msg = f"redis-server did not answer PING within {timeout} s:\n{self.logs()}"
                    raise AssertionError(msg)
                # Readiness polling of a server we just started, not waiting for an outcome.
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Popen returns at once; only waiting for the child would block the loop.
        self._log = self.log_path.open("ab")
        return subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--dir",
                str(self.dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )

    async def stop(self, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """SIGTERM (Redis flushes its AOF and exits), then wait without blocking the loop."""
        assert self.proc is not None
        if not await sigterm_and_wait(self.proc, timeout, interval=0.02):
            self.kill()
            msg = f"redis-server ignored SIGTERM for {timeout} s"
            raise AssertionError(msg)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (an outage, or clean-up after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_log()

    def logs(self) -> str:
        """What the server wrote so far."""
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
