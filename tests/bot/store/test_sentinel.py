"""The Redis store behind a real Redis Sentinel: a master, its replica and one sentinel, all
``redis-server`` children of the test. Turns go through the sentinel-discovered master; when the
master dies the sentinel promotes the replica, and the store carries on there with the sessions
written before (they were replicated)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from e2e_harness import free_port
from redis.exceptions import RedisError
from redis_child import redis_server_path

from bot.store import RedisStore, Session, StoreUnavailable
from flows.types import ConvKey

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="needs redis-server")

SERVICE = "wispbot-test"


class Servers:
    """The three children and their ports."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.master, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str) -> None:
        with (self.dir / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                [str(redis_server_path()), *args], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


async def _answers(port: int, deadline: float = 10.0) -> None:
    client = aioredis.Redis(port=port, socket_connect_timeout=0.5)
    end = time.monotonic() + deadline
    try:
        while True:
            try:
                if await client.ping():
                    return
            except (RedisError, OSError):
                if time.monotonic() > end:
                    raise
            await asyncio.sleep(0.05)  # readiness polling of a server just started
    finally:
        await client.aclose()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    s = Servers(tmp_path)
    common = ("--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path))
    s.spawn("master", "--port", str(s.master), *common)
    s.spawn("replica", "--port", str(s.replica), "--replicaof", "127.0.0.1", str(s.master), *common)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {s.sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {s.master} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 500\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    s.spawn("sentinel", str(conf), "--sentinel")
    try:
        for port in (s.master, s.replica, s.sentinel):
            await _answers(port)
        yield s
    finally:
        for name in list(s.procs):
            s.stop(name)


async def _turn(store: RedisStore, key: ConvKey, event: str, state: str) -> None:
    start = await store.open_turn(
        key, event, rate_scope="r", rate_window=60, rate_limit=99, lease=5
    )
    assert start.locked
    await store.save_and_release(key, Session(state=state), 600)


async def _replicated(port: int, name: str) -> None:
    client = aioredis.Redis(port=port)
    try:
        for _ in range(200):
            if await client.exists(name):
                return
            await asyncio.sleep(0.05)  # replication is asynchronous
        raise AssertionError("the replica never received the session")
    finally:
        await client.aclose()


async def _sentinel_knows_the_replica(servers: Servers) -> None:
    """A sentinel learns of replicas from the master's INFO, every 10 s: a failover before that
    has nobody to promote."""
    sentinel = aioredis.Redis(port=servers.sentinel, decode_responses=True)
    try:
        for _ in range(300):
            replicas = await sentinel.sentinel_slaves(SERVICE)
            if any(
                int(r.get("port", 0)) == servers.replica and not r.get("is_disconnected")
                for r in replicas
            ):
                return
            await asyncio.sleep(0.1)  # polling the sentinel's view, not a fixed wait
        raise AssertionError("the sentinel never learned of the replica")
    finally:
        await sentinel.aclose()


async def test_turns_go_through_the_sentinel_and_survive_a_failover(servers: Servers) -> None:
    store = RedisStore.from_url(f"redis+sentinel://127.0.0.1:{servers.sentinel}/{SERVICE}/0")
    keys = [ConvKey("telegram", str(700 + i)) for i in range(20)]
    try:
        await asyncio.gather(*(_turn(store, k, f"a{k.chat_id}", "client.menu") for k in keys))
        await _replicated(servers.replica, f"wispbot:conv:telegram:{keys[-1].chat_id}")
        await _sentinel_knows_the_replica(servers)

        servers.stop("master")  # the master dies; the sentinel promotes the replica
        deadline = time.monotonic() + 30
        while True:
            try:
                await _turn(store, keys[0], "after-failover", "fault.category")
                break
            except StoreUnavailable:
                # What the engine does too: retry while the store is unavailable.
                assert time.monotonic() < deadline, "no failover within 30 s"
                await asyncio.sleep(0.2)

        first = await store.load(keys[0])
        last = await store.load(keys[-1])
    finally:
        await store.aclose()
    promoted = aioredis.Redis(port=servers.replica)
    try:
        assert (await promoted.info("replication"))["role"] == "master"
    finally:
        await promoted.aclose()
    assert first is not None
    assert first.state == "fault.category"  # written on the promoted replica
    assert last is not None
    assert last.state == "client.menu"  # written before the failover, kept by the replica
