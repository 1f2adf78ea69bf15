"""The request flows end to end on Telegram: ``python -m bot run`` (long polling) against the fake
Bot API, the WispHub sandbox and a real Redis (fixtures in conftest.py, helpers in
tests/fakes/e2e_harness.py). One bot only: the identity module's ``fleet`` (long polling,
default settings: always open, agents configured).

A payment receipt sent as a photo reaches the agents' topic as a copy of the customer's message
and files one Reconexión ticket; a cancellation reaches an agent with the request on the card.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2e_harness import (
    BotProcess,
    Chat,
    identify,
    wait_for,
    wait_for_text,
)
from telegram_api import FakeTelegram

from integrations.wisphub.sandbox import Sandbox
from tests.e2e.test_identity_e2e import fleet  # noqa: F401  # the one polling bot

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NewChat = Callable[..., Chat]
CARLOS = ("79856321", "carlos perez", "Carlos")  # service 11: suspended, owes $ 179.800
ANA = ("1020304050", "ana maria ruiz", "Ana")  # service 10: active


def ticket_posts(sandbox: Sandbox) -> list[dict[str, str]]:
    """The form fields of every ticket the bot filed."""
    return [r.fields for r in sandbox.requests if r.method == "POST" and r.path == "/tickets/"]


async def test_a_receipt_photo_reaches_the_topic_and_files_one_ticket(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram, sandbox: Sandbox
) -> None:
    agents = fake.agents_chat_id
    chat = new_chat("Carlos")
    await identify(chat, *CARLOS)
    chat.press("Reportar un pago")
    await chat.expect("foto o documento")
    start = len(fake.sent(agents))

    chat.photo("pago de noviembre")

    await chat.expect(r"abri el ticket #\d+")
    card = await wait_for_text(fake, agents, "Solicitud: Reportar un pago", start)
    assert "Carlos" in (card.text or "")
    await wait_for(
        fake,
        agents,
        lambda m: (
            m.method == "copyMessage"
            and m.from_chat_id == chat.id
            and m.message_thread_id == card.message_thread_id
        ),
        "copying the customer's receipt into the topic",
        start,
    )
    posts = ticket_posts(sandbox)
    assert [(p["servicio"], p["asunto"]) for p in posts] == [("11", "Reconexión")]
    assert "pago de noviembre" in posts[0]["descripcion"]


async def test_a_cancellation_reaches_an_agent_with_the_request_on_the_card(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram, sandbox: Sandbox
) -> None:
    agents = fake.agents_chat_id
    chat = new_chat()
    await identify(chat, *ANA)
    chat.press("Otros trámites")
    await chat.expect("Que tramite necesitas")
    start = len(fake.sent(agents))

    chat.press("Cancelar el servicio")

    await chat.expect("Te comunico con un asesor")
    card = await wait_for_text(fake, agents, "Solicitud: Cancelar el servicio", start)
    assert "servicio 10" in (card.text or "")
    assert ticket_posts(sandbox) == []
