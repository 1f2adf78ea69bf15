"""Relays to the agents' group under Telegram's ceiling of 20 messages a minute per group:
``python -m bot run`` against a fake Bot API that enforces it (429 with ``retry_after``).

A burst of handoffs used to be relayed while each customer's conversation lock was held, so the
group's pacing held the locks: customers' next messages waited 40 s for them and were dropped.
Relays now go to a durable outbox per topic, sent by a worker outside any conversation lock,
several pending messages merged into one group message.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import BotProcess, Chat, bot_env, eventually, fold, free_port, launched, running
from telegram_api import FakeTelegram, Sent

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CUSTOMERS = 12
FOLLOW_UPS = 2
PER_WINDOW, WINDOW = 5, 15.0  # Telegram's 20 a minute, counted in windows of 15 s
SLOW_NOTICE = "los asesores estan recibiendo muchos mensajes"
BURST_SECONDS = 150.0  # bound on the whole burst reaching the group at 20 a minute
NewChat = Callable[..., Chat]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay_bot_process(
    request: pytest.FixtureRequest, fake: FakeTelegram, sandbox: Sandbox, workdir: Path
) -> AsyncIterator[BotProcess]:
    """One long-polling bot that tells customers after 3 s that agents are slow."""
    env = bot_env(fake, sandbox.url, free_port(), RELAY_SLOW_SECONDS="3")
    bots = {"relay": BotProcess("relay", env, workdir)}
    async with launched(bots, str(request.path)):
        yield bots["relay"]


@pytest_asyncio.fixture(loop_scope="module")
async def relay_bot(relay_bot_process: BotProcess, clean: None) -> BotProcess:
    """The bot, running, on a flushed Redis."""
    return await running(relay_bot_process)


def _token(customer: int, n: int) -> str:
    return f"cliente{customer:02d}-mensaje{n}"


def _where(posts: list[Sent], token: str) -> tuple[int, int, int | None] | None:
    """(post index, position in its text, topic) of the first group post carrying ``token``."""
    for index, post in enumerate(posts):
        found = (post.text or "").find(token)
        if found >= 0:
            return index, found, post.message_thread_id
    return None


@pytest.mark.timeout(400)  # two bursts at 20 a minute, on a busy machine
async def test_a_handoff_burst_relays_every_message_under_the_group_ceiling(
    relay_bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """12 customers ask for an agent at once and write twice each, against a group that takes
    20 messages a minute: every message reaches its customer's topic in order (merged is fine),
    each customer is told at most once that the agents are slow, and the customers' next
    messages are answered at once and reach the topic after the earlier ones."""
    agents = fake.agents_chat_id
    fake.flood_limit(PER_WINDOW, WINDOW)
    try:
        group_start = len(fake.sent(agents))
        refused_start = fake.flood_refusals
        chats = [new_chat(f"Cliente{i}") for i in range(CUSTOMERS)]
        for chat in chats:
            chat.say("/agente")
        sent_at: dict[str, float] = {}
        for n in range(1, FOLLOW_UPS + 1):
            for i, chat in enumerate(chats):
                chat.fake.user_text(chat.id, f"hola, {_token(i, n)}", first_name=chat.first_name)
                sent_at[_token(i, n)] = time.monotonic()
        for chat in chats:
            await chat.expect("Te comunico con un asesor", timeout=90)

        def posts() -> list[Sent]:
            return fake.sent(agents)[group_start:]

        async def all_relayed() -> bool:
            group = posts()
            return all(_where(group, token) is not None for token in sent_at)

        try:
            await eventually(all_relayed, "the follow-ups to reach the group", BURST_SECONDS)
        except AssertionError:
            missing = [token for token in sent_at if _where(posts(), token) is None]
            msg = f"{len(missing)} of {len(sent_at)} follow-ups never reached the agents' group"
            raise AssertionError(msg) from None
        group = posts()
        for i in range(CUSTOMERS):
            found = [_where(group, _token(i, n)) for n in range(1, FOLLOW_UPS + 1)]
            assert all(f is not None for f in found)
            places = [f for f in found if f is not None]
            # One topic per customer, and the customer's order kept.
            assert len({topic for _, _, topic in places}) == 1, places
            assert places == sorted(places), places
        topics = {_where(group, _token(i, 1))[2] for i in range(CUSTOMERS)}  # type: ignore[index]
        assert len(topics) == CUSTOMERS

        told = [sum(SLOW_NOTICE in fold(m.text or "") for m in c.messages()) for c in chats]
        assert max(told) == 1, told  # told, and never twice
        # The bot stayed quiet otherwise: the only replies are the handoff's and the notice.
        for chat in chats:
            others = [m.text for m in chat.messages() if SLOW_NOTICE not in fold(m.text or "")]
            assert all("te comunico" in fold(t or "") for t in others), chat.transcript()

        # Measured figures (pytest -s prints them).
        waits = {}
        for token, at in sent_at.items():
            where = _where(group, token)
            assert where is not None
            waits[token] = group[where[0]].at - at
        print(
            f"\nrelayed {len(waits)} of {len(sent_at)} follow-ups;"
            f" {len(group)} group messages for {CUSTOMERS} cards + {len(sent_at)} follow-ups;"
            f" {fake.flood_refusals - refused_start} calls refused with 429;"
            f" longest wait {max(waits.values()):.1f} s;"
            f" {sum(told)} of {CUSTOMERS} customers told the agents are slow"
        )

        # Later messages: answered at once, and relayed after the earlier ones.
        for chat in chats:
            chat.say("/cancelar")
        for chat in chats:
            await chat.expect("Terminaste la conversacion")

        async def all_left() -> bool:
            group = posts()
            return (
                sum(bool(re.search("termino la conversacion", fold(m.text or ""))) for m in group)
                >= CUSTOMERS
            )

        await eventually(all_left, "every topic to be told the customer left", BURST_SECONDS)
        group = posts()
        for i in range(CUSTOMERS):
            last = _where(group, _token(i, FOLLOW_UPS))
            assert last is not None
            left = [
                (index, post.message_thread_id)
                for index, post in enumerate(group)
                if "termino la conversacion" in fold(post.text or "")
                and post.message_thread_id == last[2]
            ]
            assert len(left) == 1, (last, left)
            assert left[0][0] >= last[0], (last, left)
    finally:
        fake.flood_limit(0)


async def test_relays_waiting_when_the_process_dies_are_sent_by_the_next_one(
    relay_bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """kill -9 while relays wait for the group's ceiling: the next process sends them all."""
    agents = fake.agents_chat_id
    fake.flood_limit(per_window=1, window=60.0)
    try:
        group_start, refused = len(fake.sent(agents)), fake.flood_refusals
        chats = [new_chat(f"Cliente{i}") for i in range(2)]
        for i, chat in enumerate(chats):
            chat.say("/agente")
            fake.user_text(chat.id, f"hola, {_token(i, 1)}", first_name=chat.first_name)
        for chat in chats:
            await chat.expect("Te comunico con un asesor")

        async def one_posted_and_refused() -> bool:
            return len(fake.sent(agents)) > group_start and fake.flood_refusals > refused

        await eventually(one_posted_and_refused, "the ceiling to hold relays back")
        relay_bot.kill9()
    finally:
        fake.flood_limit(0)
    await running(relay_bot)

    async def all_relayed() -> bool:
        group = fake.sent(agents)[group_start:]
        return all(_where(group, _token(i, 1)) is not None for i in range(len(chats)))

    # Bounded by the dead sender's lease on its topic (15 s) and a start-up.
    await eventually(all_relayed, "the kept relays to reach the group", 90)
    group = fake.sent(agents)[group_start:]
    cards = [p for p in group if (p.text or "").startswith("Nueva conversación")]
    assert len(cards) == len(chats)  # each card once: nothing sent twice
    for i in range(len(chats)):
        assert sum(_token(i, 1) in (p.text or "") for p in group) == 1
