"""Faults under load, end to end: many customers' identifications in flight when the process is
killed (kill -9) or when Redis is SIGKILLed and comes back 10 s later (AOF, fsync always).

Each customer writes four messages at once, each answered by a reply of its own:
"Soy cliente" (the document is asked), the document (the name is asked), the name (verified,
client menu) and "Estado de cuenta" (the account). A message handled out of its order is read as
something else (a name read as a document) and answered by a reply that is none of these, so
the transcripts tell what was lost, handled twice or reordered. WispHub answers 1 s late, so
that many turns are in flight (holding their conversation's lock, or waiting in its line) when
the fault lands.

What is asserted, for every customer: each reply exactly once, in order, nothing misread, and the
last reply within a bound measured from the moment the service was whole again (the process
restarted, or Redis back). The figures (lost, doubled, reordered, longest wait) are printed.

The bot runs against a ``redis-server`` of this module's (``tests/fakes/redis_child.py``);
skipped without one unless ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import BotProcess, Chat, bot_env, eventually, fold, free_port, launched, running
from redis_child import RedisChild, redis_server_path
from telegram_api import FakeTelegram

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DOCUMENT, NAME = "1020304050", "ana maria ruiz"  # the sandbox's Ana: service 10
# (what the customer writes, the reply that is unique to that message)
MOVES: list[tuple[str, str]] = [
    ("Soy cliente", "numero de documento"),
    (DOCUMENT, "nombre completo del titular"),
    (NAME, "gracias, ana"),
    ("Estado de cuenta", "valor mensual"),
]
# The other messages those turns send (the client menu after the name and after the account).
FOLLOW_UPS = ["que quieres hacer", "algo mas"]
WISPHUB_DELAY = 1.0
KILL_CUSTOMERS = 60
OUTAGE_CUSTOMERS = 120
OUTAGE_SECONDS = 10.0
# The bound on the longest wait after the fault: the lock's lease (5 s) plus one sweep (15 s),
# plus the turns still to run for a customer (four, each waiting 1 s or more on WispHub) on a
# machine that is busy with the other customers' turns and with other work.
LONGEST_WAIT = 60.0
DONE_SECONDS = 150.0  # for every customer to be answered (a failure, past this)


@dataclass
class Figures:
    """What the customers saw, counted over all of them."""

    lost: int  # expected replies that never came
    doubled: int  # expected replies that came more than once
    reordered: int  # customers with a reply out of order, or a message read as another
    longest_wait: float  # seconds from the fault (the kill, Redis back) to a customer's last reply

    def __str__(self) -> str:
        return (
            f"lost={self.lost} doubled={self.doubled} reordered={self.reordered}"
            f" longest_wait={self.longest_wait:.1f}s"
        )


def figures(chats: list[Chat], since: float) -> Figures:
    """Count what each customer was answered (``since``: monotonic time of the fault)."""
    lost = doubled = reordered = 0
    longest = 0.0
    known = [reply for _, reply in MOVES] + FOLLOW_UPS
    for chat in chats:
        sent = chat.messages()
        texts = [fold(m.text or "") for m in sent]
        firsts = []
        for _, reply in MOVES:
            hits = [i for i, text in enumerate(texts) if re.search(reply, text)]
            lost += not hits
            doubled += len(hits) > 1
            firsts.extend(hits[:1])
        misread = any(not any(re.search(k, text) for k in known) for text in texts)
        reordered += misread or firsts != sorted(firsts)
        if sent:
            longest = max(longest, sent[-1].at - since)
    return Figures(lost, doubled, reordered, longest)


def report(chats: list[Chat], what: str, found: Figures) -> str:
    """The figures and the transcripts of the customers whose conversation went wrong."""
    bad = [c for c in chats if figures([c], 0.0).lost + figures([c], 0.0).doubled] or [
        c for c in chats if figures([c], 0.0).reordered
    ]
    shown = "\n".join(f"chat {c.id}:\n{c.transcript()}" for c in bad[:3])
    return f"{what}: {found}\n{shown}"


def write_all(fake: FakeTelegram, chats: list[Chat]) -> None:
    """Every customer writes the four messages, the customers' messages interleaved."""
    for text, _ in MOVES:
        for chat in chats:
            fake.user_text(chat.id, text, first_name="Ana", last_name="Ruiz")


def all_answered(chats: list[Chat]) -> bool:
    """Every customer has the account reply (the last one) and its follow-up."""
    return all(
        any(re.search("algo mas", fold(m.text or "")) for m in chat.messages()) for chat in chats
    )


async def settle(chats: list[Chat], bot: BotProcess, redis_url: str) -> None:
    """Wait (bounded) until every customer was answered to the end and the service is idle (no
    lock held, no turn in flight), so that a message handled twice has shown by then."""

    async def done() -> bool:
        return all_answered(chats)

    with contextlib.suppress(AssertionError):  # the figures say what is missing
        await eventually(done, "every customer answered to the end", DONE_SECONDS)
    client = aioredis.from_url(redis_url)

    async def idle() -> bool:
        busy = await client.keys("wispbot:lock:*")
        return not busy and not await client.hlen("wispbot:turns:inflight")

    try:
        with contextlib.suppress(AssertionError):
            await eventually(idle, "the service to be idle", 30)
    finally:
        await client.aclose()
    assert bot.running, bot.logs()[-5000:]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def own_redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisChild]:
    """A redis-server of this module's, AOF with fsync always (skip, or fail on CI, without)."""
    executable = redis_server_path()
    if executable is None:
        reason = "redis-server is not on PATH: the fault tests need their own server"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisChild(executable, free_port(), tmp_path_factory.mktemp("redis"), fsync="always")
    await server.start()
    try:
        yield server
    finally:
        if server.running:
            await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fault_bot(
    request: pytest.FixtureRequest,
    fake: FakeTelegram,
    sandbox: Sandbox,
    workdir: Path,
    own_redis: RedisChild,
) -> AsyncIterator[BotProcess]:
    """The long-polling bot on ``fake`` and this module's redis-server, default settings."""
    env = bot_env(fake, sandbox.url, free_port(), REDIS_URL=own_redis.url)
    bots = {"fault": BotProcess("crash-order", env, workdir)}
    async with launched(bots, str(request.path)):
        yield bots["fault"]


@pytest_asyncio.fixture(loop_scope="module")
async def bot(
    fault_bot: BotProcess, own_redis: RedisChild, sandbox: Sandbox
) -> AsyncIterator[BotProcess]:
    """The bot, running, on a flushed database, WispHub answering 1 s late."""
    if not own_redis.running:
        await own_redis.start()
    client = aioredis.from_url(own_redis.url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    sandbox.reset()
    sandbox.add_fault("^/", status=0, delay=WISPHUB_DELAY, count=None)
    yield await running(fault_bot)
    sandbox.clear_faults()


def customers(fake: FakeTelegram, n: int, first: int) -> list[Chat]:
    """``n`` customers with fresh chat ids."""
    return [Chat(fake, first + i, "Ana") for i in range(n)]


async def in_flight(fake: FakeTelegram, sandbox: Sandbox, chats: list[Chat]) -> None:
    """Wait until every message was fetched (its turn is in Redis) and most customers' document
    look-ups are waiting on WispHub (one request for them all: the client joins look-ups of one
    document): those turns hold their conversation's lock, the name and
    the menu choice wait in its line.

    (The fault lands mid-turn, not in the instant Telegram accepted a reply: a reply Telegram
    took just before a kill -9, whose turn could not record that, is sent again from the
    outbox: at least once, as no channel can tell a repeat.)"""

    async def underway() -> bool:
        looking = any("cedula" in r.query for r in sandbox.requests)
        asked = sum(
            any(re.search("numero de documento", fold(m.text or "")) for m in c.messages())
            for c in chats
        )
        return fake.pending_updates == 0 and looking and asked >= len(chats) // 2

    await eventually(underway, "the customers' turns to be under way", 60)


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_kill9_under_load_keeps_every_conversation_in_order(
    bot: BotProcess, fake: FakeTelegram, own_redis: RedisChild, sandbox: Sandbox
) -> None:
    """60 customers x 4 messages, WispHub 1 s late; the process is killed (kill -9) with turns
    running and waiting, and started again: every message is answered once, in its order,
    the last within about the lock's lease plus one sweep (plus the turns left to run)."""
    chats = customers(fake, KILL_CUSTOMERS, 810_001)
    write_all(fake, chats)
    await in_flight(fake, sandbox, chats)
    killed = time.monotonic()
    bot.kill9()
    await bot.start()
    await settle(chats, bot, own_redis.url)
    found = figures(chats, killed)
    print(f"\nkill -9, {KILL_CUSTOMERS} customers x {len(MOVES)}: {found}")
    assert (found.lost, found.doubled, found.reordered) == (0, 0, 0), report(chats, "kill", found)
    assert found.longest_wait < LONGEST_WAIT, report(chats, "kill", found)


@pytest.mark.timeout(300)
async def test_redis_outage_under_load_loses_doubles_and_reorders_nothing(
    bot: BotProcess, fake: FakeTelegram, own_redis: RedisChild, sandbox: Sandbox
) -> None:
    """120 customers x 4 messages, WispHub 1 s late; Redis is SIGKILLed with turns running and
    waiting, and started again 10 s later (AOF, fsync always): every message is answered
    once, in its order; a turn whose lock lapsed meanwhile never commits over another."""
    chats = customers(fake, OUTAGE_CUSTOMERS, 820_001)
    write_all(fake, chats)
    await in_flight(fake, sandbox, chats)
    own_redis.kill()
    await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: the fault under test lasts 10 s
    await own_redis.start()
    back = time.monotonic()
    await settle(chats, bot, own_redis.url)
    found = figures(chats, back)
    print(f"\nRedis outage, {OUTAGE_CUSTOMERS} customers x {len(MOVES)}: {found}")
    assert (found.lost, found.doubled, found.reordered) == (0, 0, 0), report(chats, "outage", found)
    assert found.longest_wait < LONGEST_WAIT, report(chats, "outage", found)
