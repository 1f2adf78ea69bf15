"""End-to-end fixtures: the real service as a subprocess against local peers.

The fake Bot API (``tests/fakes/telegram_api.py``) and the WispHub sandbox run in the test
process, in the module's event loop; ``python -m bot run`` runs as a child process pointed at them
and at a real Redis (database 13, flushed before each test); see ``tests/fakes/e2e_harness.py``.
The child's JSON logs go to a file that is attached to the report of any failed e2e test.

Starting the service costs a few seconds (importing aiogram alone takes most of them), so the
module's three bots (see ``fleet``) are launched together once and shared; a test that stops one
leaves it to be started again by the next test that needs it. Each test gets fresh chat ids, a
flushed Redis database (all bots share database 13) and a reset sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import (
    BOTS,
    E2E_REDIS_URL,
    E2E_TIMEOUT_REDIS_URL,
    WEBHOOK_SECRET,
    BotProcess,
    Chat,
    bot_env,
    free_port,
    launched,
    running,
)
from telegram_api import FakeTelegram, running_fake_telegram

from integrations.wisphub.sandbox import Sandbox, running_sandbox

_chat_ids = itertools.count(700_001)


def _next_database(url: str) -> str:
    """The same Redis server, the next database number."""
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


# The handoff-timeout bot's own database: its sweeper (HANDOFF_TIMEOUT=2) would otherwise end
# the other bots' handoffs, whose topics live on another fake Bot API.
TIMEOUT_REDIS_URL = _next_database(E2E_REDIS_URL)


# ---- fixtures ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[FakeTelegram]:
    """The fake Bot API, in this process, on a free port."""
    async with running_fake_telegram() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    """The WispHub sandbox, in this process, on a free port."""
    async with running_sandbox(Sandbox()) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A client of the e2e Redis database."""
    client = aioredis.from_url(E2E_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder the bots run in (and write their logs to)."""
    return tmp_path_factory.mktemp("e2e")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def timeout_fake() -> AsyncIterator[FakeTelegram]:
    """The fake Bot API of the handoff-timeout bot (two bots polling one fake split updates)."""
    async with running_fake_telegram() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def webhook_fake() -> AsyncIterator[FakeTelegram]:
    """The fake Bot API of the webhook-mode bot."""
    async with running_fake_telegram() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    request: pytest.FixtureRequest,
    fake: FakeTelegram,
    timeout_fake: FakeTelegram,
    webhook_fake: FakeTelegram,
    sandbox: Sandbox,
    workdir: Path,
) -> AsyncIterator[dict[str, BotProcess]]:
    """The module's bots, launched together (start-up is mostly imports; they overlap):

    - ``polling``: long polling, default settings; most tests use it;
    - ``timeout``: long polling on its own fake and Redis database, HANDOFF_TIMEOUT=2;
    - ``webhook``: webhook mode on its own fake, its WispHub base URL a dead port. One process
      serves both concerns to save a start-up: the webhook checks and the public menu need no
      WispHub, and ``/readyz`` must say 503 for it.
    """
    webhook_port = free_port()
    envs = {
        "polling": bot_env(fake, sandbox.url, free_port()),
        "timeout": bot_env(
            timeout_fake,
            sandbox.url,
            free_port(),
            HANDOFF_TIMEOUT="2",
            REDIS_URL=E2E_TIMEOUT_REDIS_URL,
        ),
        "webhook": bot_env(
            webhook_fake,
            f"http://127.0.0.1:{free_port()}/api/",
            webhook_port,
            TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{webhook_port}/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        ),
    }
    bots = {name: BotProcess(name, env, workdir) for name, env in envs.items()}
    bots["webhook"].telegram = webhook_fake
    async with launched(bots, str(request.path)):
        yield bots


@pytest_asyncio.fixture(loop_scope="module")
async def clean(sandbox: Sandbox, redis_client: aioredis.Redis) -> AsyncIterator[None]:
    """A flushed Redis database and the sandbox's starting data, faults and request log."""
    await redis_client.flushdb()
    sandbox.reset()
    yield
    sandbox.clear_faults()
    # A test's last turn may still be saving after its reply was seen; flushing under it would
    # pull its lock away (a warning in the bot's log). Bounded: a killed bot's lock stays.
    for _ in range(250):  # 5 s
        if not await redis_client.keys("wispbot:lock:*"):
            break
        await asyncio.sleep(0.02)


@pytest_asyncio.fixture(loop_scope="module")
async def bot(fleet: dict[str, BotProcess], clean: None) -> BotProcess:
    """The shared long-polling bot, running."""
    return await running(fleet["polling"])


@pytest_asyncio.fixture(loop_scope="module")
async def timeout_bot(fleet: dict[str, BotProcess], clean: None) -> BotProcess:
    """The long-polling bot with HANDOFF_TIMEOUT=2 (on ``timeout_fake``), running; its own
    Redis database flushed."""
    client = aioredis.from_url(E2E_TIMEOUT_REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return await running(fleet["timeout"])


@pytest_asyncio.fixture(loop_scope="module")
async def webhook_bot(fleet: dict[str, BotProcess], clean: None) -> BotProcess:
    """The webhook-mode bot (on ``webhook_fake``, WispHub unreachable), running."""
    return await running(fleet["webhook"])


@pytest.fixture
def new_chat(fake: FakeTelegram) -> Callable[..., Chat]:
    """A fresh customer chat (ids never repeat within the session); on ``on`` if given."""

    def make(first_name: str = "Ana", on: FakeTelegram | None = None) -> Chat:
        return Chat(on or fake, next(_chat_ids), first_name)

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the logs of the bots this test file started to a failed test's report."""
    report = yield
    if report.failed:
        for bot in BOTS:
            if bot.owner == str(item.path):
                tail = "\n".join(bot.logs().splitlines()[-150:])
                report.sections.append((f"bot {bot.name} log (last 150 lines)", tail))
    return report
