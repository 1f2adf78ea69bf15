"""Agents who feel present, end to end through ``python -m bot run`` on Telegram (fixtures in
conftest.py): an agent's words and captions reach the customer signed with the agent's first
name, a ticket an agent opens is told to the customer, and what the bot cannot show the agents
is told in their language from the catalogue."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from e2e_harness import BotProcess, Chat, identify, open_handoff, wait_for, wait_for_text
from telegram_api import FakeTelegram

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA = ("1020304050", "ana ruiz", "Ana")
NewChat = Callable[..., Chat]


async def test_agents_sign_their_words_and_tickets_are_told_to_the_customer(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram, sandbox: Sandbox
) -> None:
    """ "Marta (asesor/a): ..." on texts and captions; /ticket gives the customer its number;
    a message the topic cannot show arrives there as a sentence, not "[... photo]"."""
    agents = fake.agents_chat_id
    chat = new_chat()
    await identify(chat, *ANA)
    thread = (await open_handoff(chat, fake)).message_thread_id
    assert thread is not None

    chat.mark()
    fake.agent_text(thread, "Hola Ana, reviso tu caso", first_name="Marta")
    said = await chat.expect("reviso tu caso")
    assert said.text == "Marta (asesor/a): Hola Ana, reviso tu caso"

    start = chat.mark()
    photo = fake.agent_photo(thread, caption="Así se ve el router", first_name="Marta")
    await chat.expect(r"^Marta \(asesor/a\): Asi se ve el router$")
    await wait_for(
        fake,
        chat.id,
        lambda m: (
            m.method == "copyMessage" and m.source_message_id == photo["message"]["message_id"]
        ),
        "copying the agent's photo",
        start,
    )

    # Something a topic cannot show (a dice): the agents read a sentence in their language.
    seen = len(fake.sent(agents))
    chat.send({"dice": {"emoji": "🎲", "value": 4}})
    note = await wait_for_text(fake, agents, "El cliente envio algo que no se puede mostrar", seen)
    assert "[" not in (note.text or "")

    chat.mark()
    fake.agent_text(thread, "/ticket revisar la antena", first_name="Marta")
    told = await chat.expect(r"Un asesor abrio el ticket #\d+")
    number = re.search(r"#(\d+)", told.text or "")
    assert number is not None
    await wait_for_text(fake, agents, f"Ticket #{number[1]} creado", thread_id=thread)
    assert sum(1 for r in sandbox.requests if r.method == "POST" and r.path == "/tickets/") == 1
