"""End to end on Telegram: attacks on identification through ``python -m bot run``.

The attacker knows a customer's first name, or holds a list of document numbers, or wants to
lock the real holder out. Each test plays the attack against the real service, the fake Bot API
and the WispHub sandbox (demo data: Ana María Ruiz Gómez, document 1020304050; Valentina Ortiz
Cárdenas, 1032456789, two services), and asserts what the attacker and the holder see.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_harness import BotProcess, Chat, bot_env, fold, free_port, launched, wait_for_text
from telegram_api import FakeTelegram

from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA_DOC = "1020304050"
VALENTINA_DOC = "1032456789"
# Anything of Ana's or Valentina's record, or the client menu, in what the bot said.
PERSONAL = re.compile(
    r"\b(ana|maria|ruiz|gomez|valentina|ortiz|cardenas|calle|carrera|hogar|empresarial"
    r"|estado de cuenta|mis tickets|promesa de pago)\b"
)
# Eight documents of the sandbox's demo clients, all real: what a prober would hope to confirm.
REAL_DOCUMENTS = [
    "760235474",
    "388264745",
    "3163838518",
    "7300281040",
    "8785470453",
    "999831694",
    "360750687",
    "8721530469",
]
LOOKUP_ATTEMPTS = 5  # the default budget of document look-ups per chat
NAME_ATTEMPTS = 3  # the default wrong names per chat


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(
    request: pytest.FixtureRequest, fake: FakeTelegram, sandbox: Sandbox, workdir: Path
) -> AsyncIterator[dict[str, BotProcess]]:
    """Only the long-polling bot (conftest's fleet also starts two this module does not use)."""
    bots = {"polling": BotProcess("polling", bot_env(fake, sandbox.url, free_port()), workdir)}
    async with launched(bots, str(request.path)):
        yield bots


def said(chat: Chat) -> str:
    """Everything the bot sent this chat (texts and button labels), folded."""
    return fold(
        "\n".join(
            " ".join([m.text or "", *(b["text"] for b in m.buttons)]) for m in chat.messages()
        )
    )


async def to_name_question(chat: Chat, document: str, answer: str = "nombre completo") -> None:
    """Greeting → Soy cliente → the document → the bot's ``answer`` (it asks for the name)."""
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect(r"documento \(cedula\)")
    chat.say(document)
    await chat.expect(answer)


@pytest.mark.parametrize(
    ("document", "first_name_twice", "holder_says", "greeting"),
    [
        (ANA_DOC, "ana ana", "Ana María Ruiz Gómez", "Gracias, Ana"),
        (VALENTINA_DOC, "valentin valentin", "valentina ortiz", "Gracias, Valentina"),
    ],
    ids=["ana-ana", "valentin-valentin"],
)
async def test_a_first_name_typed_twice_does_not_verify(
    bot: BotProcess,
    new_chat: Callable[..., Chat],
    document: str,
    first_name_twice: str,
    holder_says: str,
    greeting: str,
) -> None:
    """Knowing the first name (twice, or with a typo) opens nothing; first name and a surname do."""
    attacker = new_chat("Mallory")
    await to_name_question(attacker, document)
    attacker.say(first_name_twice)
    await attacker.expect("no coincide.*Intentos restantes: 2")
    attacker.say(first_name_twice.upper())
    await attacker.expect("no coincide.*Intentos restantes: 1")
    attacker.say("/menu")  # an unverified chat gets the public menu, never the client's
    await attacker.expect("Soy cliente")
    assert not PERSONAL.search(said(attacker)), attacker.transcript()

    holder = new_chat()
    await to_name_question(holder, document)
    holder.say(holder_says)
    await holder.expect(greeting)


async def test_probing_documents_is_capped_per_chat(
    bot: BotProcess, new_chat: Callable[..., Chat], sandbox: Sandbox
) -> None:
    """Found or not, every document typed spends the chat's look-up budget; then it is locked."""
    prober = new_chat("Mallory")
    prober.say("/start")
    await prober.expect("Soy cliente")
    answered = []  # documents the bot told apart (name asked, or not found)
    for document in REAL_DOCUMENTS:
        prober.say("/menu")
        await prober.expect("Soy cliente")
        prober.press("Soy cliente")
        reply = await prober.expect(r"documento \(cedula\)|bloqueada")
        if "bloqueada" in fold(reply.text or ""):
            continue
        prober.say(document)
        reply = await prober.expect(r"nombre completo|no encontre|bloqueada")
        if "bloqueada" not in fold(reply.text or ""):
            answered.append(document)
    assert answered == REAL_DOCUMENTS[:LOOKUP_ATTEMPTS], prober.transcript()
    asked = {r.query.get("cedula") for r in sandbox.requests if "cedula" in r.query}
    assert asked <= set(answered)  # WispHub was not even asked about the rest

    # A new chat is not held back by the prober's budget.
    other = new_chat()
    await to_name_question(other, REAL_DOCUMENTS[-1])


async def test_wrong_names_lock_the_chat_first_and_the_document_after_its_budget(
    bot: BotProcess, new_chat: Callable[..., Chat]
) -> None:
    """Three wrong names lock the guessing chat, not the holder; five on one document, across
    chats, lock the document for every chat without another proof of identity."""
    first = new_chat("Mallory")
    await to_name_question(first, ANA_DOC)
    for wrong in ("maria ruiz", "ana perez", "carlos ruiz"):
        first.say(wrong)
    await first.expect("bloqueada por 30 minutos")
    first.say("/menu")
    await first.expect("Soy cliente")
    first.press("Soy cliente")
    await first.expect("bloqueada")

    holder = new_chat()
    await to_name_question(holder, ANA_DOC)
    holder.say("ana ruiz")
    await holder.expect("Gracias, Ana")

    second = new_chat("Eve")
    await to_name_question(second, ANA_DOC)
    second.say("ana lopez")
    # The document's budget is nearer than the chat's: the next wrong name locks, and it says so.
    await second.expect("Intentos restantes: 1. Te queda un intento")
    second.say("ana gomez perez")  # the fifth wrong name on this document
    await second.expect("bloqueada por 30 minutos")

    third = new_chat("Trudy")
    await to_name_question(third, ANA_DOC, answer="bloqueada")
    assert "nombre completo" not in said(third)
    for chat in (first, second, third):
        assert not PERSONAL.search(said(chat)), chat.transcript()


async def lock_document(new_chat: Callable[..., Chat], document: str) -> None:
    """Two guessers spend the document's budget: three wrong names, then two."""
    for name, wrong in (("Mallory", 3), ("Eve", 2)):
        guesser = new_chat(name)
        await to_name_question(guesser, document)
        for n in range(wrong):
            guesser.say(f"ana lopez {n}")
        await guesser.expect("bloqueada por 30 minutos")


async def test_an_agent_verifies_a_customer_whose_document_is_locked(
    bot: BotProcess, new_chat: Callable[..., Chat], fake: FakeTelegram
) -> None:
    """The holder, locked out by guessers, asks for an agent; the agent checks who she is and
    types /verificar: the chat is verified and the client menu follows the handoff."""
    await lock_document(new_chat, ANA_DOC)
    holder = new_chat()
    await to_name_question(holder, ANA_DOC, answer="bloqueada")
    agents = fake.agents_chat_id
    agents_start = len(fake.sent(agents))
    holder.press("Hablar con un asesor")
    await holder.expect("Te comunico con un asesor")
    card = await wait_for_text(fake, agents, "Nueva conversacion", agents_start)
    thread = card.message_thread_id
    assert thread is not None
    assert "sin verificar" in fold(card.text or "")

    fake.agent_text(thread, "/verificar")
    await wait_for_text(fake, agents, "Uso: /verificar", thread_id=thread)
    fake.agent_text(thread, "/verificar 1.020.304.050")
    await wait_for_text(
        fake,
        agents,
        "verificado por un asesor: Ana Maria Ruiz Gomez · servicio 10",
        thread_id=thread,
    )
    fake.agent_text(thread, "/cerrar")
    await holder.expect("Estado de cuenta")
    holder.press("Estado de cuenta")
    await holder.expect("Valor mensual")
