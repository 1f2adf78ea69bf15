"""The agents' side under attack and fault, end to end: ``python -m bot run`` against the fake
Bot API, the WispHub sandbox and a real Redis (fixtures in conftest.py, helpers in
tests/fakes/e2e_harness.py).

Two bots of this module's own (``fleet`` is overridden here):

- ``webhook``: webhook mode, ``TELEGRAM_AGENT_IDS=5001,5002`` (the fake's agent Luis is 5001);
- ``timeout``: long polling, ``HANDOFF_TIMEOUT=2``, every member of the group an agent, its
  own Redis database (its sweeper would time out the other bot's handoffs).

Every wait is on a message reaching the fake, bounded by a timeout; where a test asserts that
something did not reach a customer, it first waits for a later message of the same topic, which
the service handles strictly after (a topic's messages keep their order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import (
    E2E_TIMEOUT_REDIS_URL,
    WEBHOOK_SECRET,
    BotProcess,
    Chat,
    bot_env,
    free_port,
    launched,
    post_update,
    wait_for_text,
)
from telegram_api import FakeTelegram, Sent

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NewChat = Callable[..., Chat]
AGENT = 5001  # the fake's default agent (Luis), on the list
STRANGER = 6660  # a member of the agents' group who is not on the list
NOT_AN_AGENT = "no estas en la lista de asesores"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    request: pytest.FixtureRequest,
    timeout_fake: FakeTelegram,
    webhook_fake: FakeTelegram,
    sandbox: Sandbox,
    workdir: Path,
) -> AsyncIterator[dict[str, BotProcess]]:
    """This module's two bots (see the module docstring), launched together."""
    webhook_port = free_port()
    envs = {
        "webhook": bot_env(
            webhook_fake,
            sandbox.url,
            webhook_port,
            TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{webhook_port}/webhooks/telegram",
            TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
            TELEGRAM_AGENT_IDS=f"{AGENT}, 5002",
        ),
        "timeout": bot_env(
            timeout_fake,
            sandbox.url,
            free_port(),
            HANDOFF_TIMEOUT="2",
            REDIS_URL=E2E_TIMEOUT_REDIS_URL,
        ),
    }
    bots = {name: BotProcess(name, env, workdir) for name, env in envs.items()}
    bots["webhook"].telegram = webhook_fake
    async with launched(bots, str(request.path)):
        yield bots


async def _post(bot: BotProcess, update: dict[str, object]) -> None:
    status = await post_update(bot, update)
    assert status == 200, f"webhook answered {status}:\n{bot.logs()[-3000:]}"


async def handed_off(bot: BotProcess, chat: Chat, fake: FakeTelegram) -> int:
    """The customer (unverified) asks for a human over the webhook; the topic's thread id."""
    await _post(bot, chat.say("/start"))
    await chat.expect("Hablar con un asesor")
    agents_start = len(fake.sent(fake.agents_chat_id))
    await _post(bot, chat.press("Hablar con un asesor"))
    await chat.expect("Te comunico con un asesor")
    card = await wait_for_text(fake, fake.agents_chat_id, "Nueva conversacion", agents_start)
    assert card.message_thread_id is not None
    return card.message_thread_id


async def topic_post(fake: FakeTelegram, thread: int, pattern: str, start: int) -> Sent:
    """A post of the bot's in the topic matching ``pattern``, since index ``start``."""
    return await wait_for_text(fake, fake.agents_chat_id, pattern, start, thread_id=thread)


# ---- who may act in a topic (TELEGRAM_AGENT_IDS) -------------------------------------------


async def test_a_member_not_on_the_agent_list_reaches_no_customer(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat, sandbox: Sandbox
) -> None:
    """A member of the agents' group who is not in TELEGRAM_AGENT_IDS can neither write to the
    customer nor /cerrar nor /ticket: each try gets a one-line notice in the topic. A listed
    agent still relays and closes."""
    fake = webhook_fake
    chat = new_chat("Marta", on=fake)
    thread = await handed_off(webhook_bot, chat, fake)
    quiet_from = chat.mark()
    tickets_before = sum(1 for r in sandbox.requests if r.method == "POST")
    for text in ("Hola, dame tu clave del banco", "/ticket cobro doble", "/cerrar"):
        start = len(fake.sent(fake.agents_chat_id))
        await _post(webhook_bot, fake.agent_text(thread, text, STRANGER, first_name="Intruso"))
        notice = await topic_post(fake, thread, NOT_AN_AGENT, start)
        assert "\n" not in (notice.text or "").strip(), notice.text
    assert not fake.topics[thread].closed

    await _post(webhook_bot, fake.agent_text(thread, "Hola Marta, soy Luis", AGENT))
    await chat.expect("soy Luis")
    # Everything the customer got since the handoff: the listed agent's words only.
    assert [m.text for m in chat.messages()[quiet_from:]] == [
        "Luis (asesor/a): Hola Marta, soy Luis"
    ]
    assert sum(1 for r in sandbox.requests if r.method == "POST") == tickets_before

    await _post(webhook_bot, fake.agent_text(thread, "/cerrar", AGENT))
    await chat.expect("cerro la conversacion")
    assert fake.topics[thread].closed


# ---- faults on the agents' side --------------------------------------------------------------


async def test_an_agent_message_in_a_topic_of_no_conversation_is_accepted_and_ignored(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """An agent writes in a topic that belongs to no conversation (made by hand, or its link
    expired): the webhook answers 200 (a 5xx makes Telegram send it again forever) and nothing
    is relayed; the service goes on serving."""
    fake = webhook_fake
    update = fake.agent_text(987_654, "¿alguien ve este tema?", AGENT)
    assert await post_update(webhook_bot, update) == 200, webhook_bot.logs()[-3000:]
    assert await post_update(webhook_bot, update) == 200  # Telegram's retry: also fine
    chat = new_chat(on=fake)
    await _post(webhook_bot, chat.say("/start"))
    await chat.expect("Soy cliente")
    assert [m.text for m in chat.messages() if "alguien ve" in (m.text or "")] == []


async def test_cancelar_frees_the_customer_when_the_topic_cannot_be_closed(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """The customer's topic was deleted by an admin (posting and closing it fail): /cancelar
    still hands the customer back to the bot."""
    fake = webhook_fake
    chat = new_chat(on=fake)
    thread = await handed_off(webhook_bot, chat, fake)
    for method in ("closeForumTopic", "sendMessage"):
        fake.fail(
            method, 400, count=None, thread_id=thread, description="Bad Request: TOPIC_DELETED"
        )
    await _post(webhook_bot, chat.say("/cancelar"))
    await chat.expect("Terminaste la conversacion con el asesor")
    await chat.expect("Soy cliente")
    await _post(webhook_bot, chat.press("Planes y precios"))
    await chat.expect("Hogar")  # the bot answers again: not relayed to the dead topic


async def test_the_sweeper_times_out_every_handoff_when_one_topic_fails(
    timeout_bot: BotProcess, timeout_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """HANDOFF_TIMEOUT=2 and nobody answers three customers: one's topic can no longer be
    closed, another's was deleted (posting fails too). All three are offered the way forward;
    the third topic is told and closed as usual."""
    fake = timeout_fake
    faults = {"Ana": ("closeForumTopic",), "Luz": ("closeForumTopic", "sendMessage"), "Marta": ()}
    chats, threads = [], []
    for name, methods in faults.items():
        chat = new_chat(name, on=fake)
        chat.say("/start")
        await chat.expect("Hablar con un asesor")
        agents_start = len(fake.sent(fake.agents_chat_id))
        chat.press("Hablar con un asesor")
        card = await wait_for_text(fake, fake.agents_chat_id, "Nueva conversacion", agents_start)
        thread = card.message_thread_id
        assert thread is not None
        for method in methods:  # (set after the card: the bot posts it with sendMessage)
            fake.fail(method, 400, count=None, thread_id=thread)
        chats.append(chat)
        threads.append(thread)
    for chat in chats:
        await chat.expect("siguen ocupados", timeout=15)
    await topic_post(fake, threads[-1], "El cliente termino la conversacion", 0)
    assert fake.topics[threads[-1]].closed
