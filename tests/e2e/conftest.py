"""End-to-end fixtures: the real service as a subprocess against local peers.

The fake Bot API (``tests/fakes/telegram_api.py``) and the WispHub sandbox run in the test
process, in the module's event loop; ``python -m bot run`` runs as a child process pointed at them
and at a real Redis (database 13, flushed before each test); see ``tests/fakes/e2e_harness.py``.
The child's JSON logs go to a file that is attached to the report of any failed e2e test.

Starting the service costs a few seconds (importing aiogram alone takes most of them), so one
polling bot serves the whole module; tests that need other settings start their own with
``spawn_bot``. Each test gets fresh chat ids, a flushed Redis database and a reset sandbox.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import (
    BOTS,
    E2E_REDIS_URL,
    WEBHOOK_SECRET,
    BotProcess,
    Chat,
    bot_env,
    free_port,
)
from telegram_api import FakeTelegram, running_fake_telegram

from integrations.wisphub.sandbox import Sandbox, running_sandbox

_chat_ids = itertools.count(700_001)


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
async def shared_bot(
    request: pytest.FixtureRequest, fake: FakeTelegram, sandbox: Sandbox, workdir: Path
) -> AsyncIterator[BotProcess]:
    """The module's long-polling bot (started on first use, again after a test stopped it)."""
    bot = BotProcess("polling", bot_env(fake, sandbox.url, free_port()), workdir)
    bot.owner = str(request.path)
    yield bot
    if bot.running:
        await bot.terminate()


@pytest_asyncio.fixture(loop_scope="module")
async def clean(sandbox: Sandbox, redis_client: aioredis.Redis) -> AsyncIterator[None]:
    """A flushed Redis database and the sandbox's starting data, faults and request log."""
    await redis_client.flushdb()
    sandbox.reset()
    yield
    sandbox.clear_faults()


@pytest_asyncio.fixture(loop_scope="module")
async def bot(shared_bot: BotProcess, clean: None) -> BotProcess:
    """The shared polling bot, running."""
    if not shared_bot.running:
        await shared_bot.start()
    return shared_bot


SpawnBot = Callable[..., Awaitable[BotProcess]]


@pytest_asyncio.fixture(loop_scope="module")
async def spawn_bot(
    request: pytest.FixtureRequest, sandbox: Sandbox, workdir: Path, clean: None
) -> AsyncIterator[SpawnBot]:
    """Start a bot of this test's own: ``await spawn_bot(name, fake_or_None, **ENV)``.

    Give it a fake Bot API of its own: two bots polling one fake would split its updates.
    ``webhook=True`` sets TELEGRAM_WEBHOOK_URL (its own /webhooks/telegram) and the secret.
    """
    started: list[BotProcess] = []

    async def spawn(
        name: str, fake: FakeTelegram | None, *, webhook: bool = False, **extra: str
    ) -> BotProcess:
        port = free_port()
        if webhook:
            extra.setdefault("TELEGRAM_WEBHOOK_URL", f"http://127.0.0.1:{port}/webhooks/telegram")
            extra.setdefault("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET)
        bot = BotProcess(name, bot_env(fake, sandbox.url, port, **extra), workdir)
        bot.owner = str(request.path)
        started.append(bot)
        await bot.start()
        return bot

    yield spawn
    for bot in started:
        if bot.running:
            await bot.terminate()


@pytest_asyncio.fixture(loop_scope="module")
async def own_fake() -> AsyncIterator[FakeTelegram]:
    """A second fake Bot API, for a bot of the test's own."""
    async with running_fake_telegram() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def webhook_fake() -> AsyncIterator[FakeTelegram]:
    """The fake Bot API of the webhook-mode bot."""
    async with running_fake_telegram() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def webhook_bot(
    request: pytest.FixtureRequest, webhook_fake: FakeTelegram, workdir: Path
) -> AsyncIterator[BotProcess]:
    """A bot in webhook mode whose WispHub base URL is a dead port.

    One process serves both concerns to save a start-up: the webhook checks and the public
    menu need no WispHub, and ``/readyz`` must say 503 for it.
    """
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}/api/"
    env = bot_env(
        webhook_fake,
        dead,
        port,
        TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/telegram",
        TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    bot = BotProcess("webhook", env, workdir)
    bot.owner = str(request.path)
    await bot.start()
    yield bot
    if bot.running:
        await bot.terminate()


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
