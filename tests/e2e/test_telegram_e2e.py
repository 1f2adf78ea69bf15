"""The Telegram channel end to end: ``python -m bot run`` against the fake Bot API, the WispHub
sandbox and a real Redis, driven the way customers and agents would (fixtures in conftest.py,
helpers in tests/fakes/e2e_harness.py).

Nothing here sleeps to wait for an outcome: every wait is on a message reaching the fake (or a
request reaching the sandbox), bounded by a timeout. Where a test asserts that the bot stayed
quiet, it first waits for a later event that the engine handles strictly after (one conversation
is handled one event at a time, in order), then looks at everything sent in between.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from e2e_harness import (
    WEBHOOK_SECRET,
    BotProcess,
    Chat,
    eventually,
    fold,
    identify,
    open_handoff,
    post_update,
    wait_for,
    wait_for_text,
    webhook_call,
)
from fixtures import fixture
from telegram_api import FakeTelegram, Sent

from bot.store import redis_key
from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA = ("1020304050", "ana maria ruiz", "Ana")  # service 10: active, Hogar 50 Mbps at $ 89.900
NewChat = Callable[..., Chat]


def ticket_posts(sandbox: Sandbox) -> int:
    """Tickets the bot filed in WispHub (the sandbox's request log)."""
    return sum(1 for r in sandbox.requests if r.method == "POST" and r.path == "/tickets/")


def count(messages: list[Sent], pattern: str) -> int:
    """How many messages' text matches ``pattern`` (accents and case aside)."""
    return sum(1 for m in messages if re.search(fold(pattern), fold(m.text or "")))


# ---- the customer's journey -------------------------------------------------------------------


async def _document_look_up_in_flight(chat: Chat, sandbox: Sandbox, delay: float) -> None:
    """Bring the customer to the document question, slow WispHub down by ``delay`` for one
    call, send the document and return once its look-up has reached WispHub."""
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect("documento")
    sandbox.add_fault("^/clientes/", status=0, delay=delay, count=1)  # slow, then a real answer
    seen = len(sandbox.requests)
    chat.say(ANA[0])

    async def in_flight() -> bool:
        return any(r.path.startswith("/clientes/") for r in sandbox.requests[seen:])

    await eventually(in_flight, "the document look-up to reach WispHub")


async def test_greeting_identification_account_and_ticket(
    bot: BotProcess, new_chat: NewChat, sandbox: Sandbox, fake: FakeTelegram
) -> None:
    """Greeted, identified, verified, reads the account, reports a fault: one ticket."""
    chat = new_chat()
    chat.say("/start")
    await chat.expect("Soy cliente")
    await chat.expect("Planes y precios")
    chat.press("Soy cliente")
    await chat.expect("documento")
    chat.say(ANA[0])
    await chat.expect("nombre completo")
    assert count(chat.window(), "Ana|Ruiz|Hogar|Calle") == 0, "revealed before verification"
    chat.say(ANA[1])
    await chat.expect("Gracias, Ana")
    await chat.expect("Estado de cuenta")

    chat.press("Estado de cuenta")
    await chat.expect(r"Valor mensual: \$ 89\.900")
    await chat.expect("algo mas")

    chat.press("Reportar falla")
    await chat.expect("Sin internet")
    chat.press("Sin internet")
    await chat.expect("responde bien")
    await chat.expect("Sigue igual")
    chat.press("Sigue igual")
    await chat.expect("pocas palabras")
    chat.say("No tengo internet desde anoche en ningún equipo")
    await chat.expect("Confirmar")
    chat.press("Confirmar")
    await chat.expect(r"abri el ticket #\d+")
    assert ticket_posts(sandbox) == 1
    # Every press was answered (the button stops spinning).
    pressed = {str(u["callback_query"]["id"]) for u in chat.moves if "callback_query" in u}
    answered = {str(a.get("callback_query_id")) for a in fake.answered_callbacks}
    assert pressed <= answered, pressed - answered
    # Free text (issue 13): a typed need is understood, not answered "No entendí".
    chat.say("cuánto debo?")
    await chat.expect("Saldo pendiente")


async def test_wisphubs_real_shapes_reach_the_customer_right(
    bot: BotProcess, new_chat: NewChat, sandbox: Sandbox
) -> None:
    """The demo's service 15 answers the connection check as a real client behind a firewall
    (private IP timeout, public IP unreachable, WispHub's "ping-exitoso" summary) and has "None"
    dates; the ticket WispHub makes behind a 502 is told once and never filed twice."""
    chat = new_chat("Valentina")
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect("documento")
    chat.say("1032456789")
    await chat.expect("nombre completo")
    chat.say("Valentina Ortiz Cárdenas")
    await chat.expect("Carrera 7")  # the record with "None" dates is not lost
    chat.press("Carrera 7 # 80-15, Local 2")
    await chat.expect("Estado de cuenta")
    chat.press("Reportar falla")
    await chat.expect("Sin internet")
    chat.press("Sin internet")
    await chat.expect(r"responde a ratos \(1 de 3 pruebas\)")
    await chat.expect("Sigue igual")
    assert count(chat.window(), "no responde") == 0
    chat.press("Sigue igual")
    await chat.expect("pocas palabras")
    sandbox.add_fault("^/tickets/$", method="POST", status=502, after=True)
    chat.say("La oficina no navega desde esta mañana")
    await chat.expect("Confirmar")
    chat.press("Confirmar")
    await chat.expect(r"abri el ticket #\d+")
    assert ticket_posts(sandbox) == 1
    assert count(chat.window(), "no responde|no confirmo") == 0


async def test_handoff_to_an_agent_and_back(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram, sandbox: Sandbox
) -> None:
    """The topic gets the card and the customer's messages; the agent's words reach the customer;
    /ticket files one ticket; /cerrar hands back to the bot; asking again reopens the topic."""
    agents = fake.agents_chat_id
    chat = new_chat()
    await identify(chat, *ANA)
    card = await open_handoff(chat, fake)
    thread = card.message_thread_id
    assert thread is not None
    assert "servicio 10" in (card.text or ""), card.text
    topics_after_first = len(fake.topics)

    quiet_from = len(chat.messages())
    chat.say("hola, tengo una duda con mi factura")
    await wait_for_text(fake, agents, "duda con mi factura", thread_id=thread)
    chat.photo()
    await wait_for(
        fake,
        agents,
        lambda m: m.method == "copyMessage" and m.from_chat_id == chat.id,
        "copying the customer's photo",
    )

    fake.agent_text(thread, "Hola Ana, soy Luis. ¿En qué te ayudo?")
    await wait_for_text(fake, chat.id, "soy Luis", quiet_from)
    # The bot said nothing of its own while the customer talked to the agent.
    assert [m.text for m in chat.messages()[quiet_from:]] == [
        "Luis (asesor/a): Hola Ana, soy Luis. ¿En qué te ayudo?"
    ]

    # An agent's photo reaches the customer as a copy of the topic's message.
    photo = fake.agent_photo(thread, caption="Así se ve el router bien conectado")
    await wait_for(
        fake,
        chat.id,
        lambda m: (
            m.method == "copyMessage"
            and m.from_chat_id == agents
            and m.source_message_id == photo["message"]["message_id"]
        ),
        "copying the agent's photo",
        quiet_from,
    )

    chat.mark()
    fake.agent_text(thread, "/ticket revisar cobro doble en la factura")
    await wait_for_text(fake, agents, r"Ticket #\d+ creado para el servicio 10", thread_id=thread)
    await chat.expect(r"Un asesor abrio el ticket #\d+")  # the customer is told its number
    assert ticket_posts(sandbox) == 1
    quiet_from = chat.mark()

    fake.agent_text(thread, "/cerrar")
    await chat.expect("El asesor cerro la conversacion")
    await wait_for_text(fake, agents, "Atencion cerrada", thread_id=thread)
    assert "cerro la conversacion" in fold(chat.messages()[quiet_from].text or "")
    assert fake.topics[thread].closed

    # The bot answers again.
    chat.press("Estado de cuenta")
    await chat.expect("Valor mensual")

    # Asking again reopens the same topic.
    reopened = await open_handoff(chat, fake)
    assert reopened.message_thread_id == thread
    assert not fake.topics[thread].closed
    assert len(fake.topics) == topics_after_first


async def test_only_the_agents_group_topics_reach_the_customer(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """A message shaped like an agent's but from another group, from a bot, or in the group's
    General topic, is not relayed."""
    agents = fake.agents_chat_id
    chat = new_chat("Marta")
    chat.say("/start")
    await chat.expect("Hablar con un asesor")
    card = await open_handoff(chat, fake)
    thread = card.message_thread_id
    assert thread is not None

    quiet_from = chat.mark()
    fake.agent_text(thread, "impostor: dame tu clave", chat_id=-1009999999999)
    fake.agent_text(thread, "otro bot: hola", from_id=999, is_bot=True)
    general = {  # the agents' group, but the General topic: no customer's
        "message_id": 99_999,
        "date": 0,
        "chat": {"id": agents, "type": "supergroup", "title": "Agentes", "is_forum": True},
        "from": {"id": 5001, "is_bot": False, "first_name": "Luis"},
        "text": "general: reunión a las 3",
    }
    fake.push_update({"message": general})
    fake.agent_text(thread, "Hola Marta, soy Luis")
    await chat.expect("soy Luis")
    fake.agent_text(thread, "/cerrar")
    await chat.expect("cerro la conversacion")
    texts = [m.text or "" for m in chat.messages()[quiet_from:]]
    assert not any(t.startswith(("impostor", "otro bot", "general")) for t in texts), texts
    assert texts[0] == "Luis (asesor/a): Hola Marta, soy Luis"


async def test_agents_burst_reaches_the_customer_in_order(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """Five agent messages in one poll reach the customer in the order they were written.

    (Each update is its own task; the engine looks the topic up before taking its turn, so
    without the service's per-topic queue they overtook one another.)"""
    chat = new_chat("Marta")
    chat.say("/start")
    await chat.expect("Hablar con un asesor")
    card = await open_handoff(chat, fake)
    thread = card.message_thread_id
    assert thread is not None
    start = chat.mark()
    lines = [f"mensaje {i} del asesor" for i in range(1, 6)]
    for line in lines:
        fake.agent_text(thread, line)
    await fake.wait_for_messages(chat.id, start + len(lines), timeout=10)
    assert [m.text for m in chat.messages()[start:]] == [f"Luis (asesor/a): {x}" for x in lines]


# ---- robustness -------------------------------------------------------------------------------


async def test_a_burst_of_five_in_one_poll_is_handled_in_order(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """Five messages queued together (one getUpdates answer) are answered in their order."""
    chat = new_chat()
    burst = ["/start", "Soy cliente", ANA[0], ANA[1], "Estado de cuenta"]
    for text in burst:  # no await in between: the parked long poll returns all five at once
        fake.user_text(chat.id, text)
    assert fake.pending_updates >= len(burst)
    await chat.expect("Valor mensual")
    texts = [fold(m.text or "") for m in chat.messages()]
    steps = ["asistente virtual", "documento", "nombre completo", "gracias, ana", "valor mensual"]
    firsts = [next(i for i, t in enumerate(texts) if step in t) for step in steps]
    assert firsts == sorted(firsts), chat.transcript()
    assert count(chat.messages(), "No entendi|no parece") == 0, chat.transcript()


async def test_a_duplicate_update_is_handled_once(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """The same update_id delivered twice gets one answer."""
    chat = new_chat()
    update = chat.say("/start")
    fake.push_update(update)  # Telegram re-delivers: same update_id
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect("documento")
    assert count(chat.messages(), "asistente virtual") == 1, chat.transcript()
    status, text = await bot.request("GET", "/metrics")
    assert status == 200
    assert re.search(r'wispbot_duplicate_events_total\{channel="telegram"\} [1-9]', text)


async def test_restart_in_the_middle_of_a_conversation(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram, redis_client: aioredis.Redis
) -> None:
    """kill -9 between two messages; the next process goes on where each customer was: one in
    the middle of identification, one talking to an agent."""
    agents = fake.agents_chat_id
    ana = new_chat()
    ana.say("/start")
    await ana.expect("Soy cliente")
    ana.press("Soy cliente")
    await ana.expect("documento")
    ana.say(ANA[0])
    await ana.expect("nombre completo")
    marta = new_chat("Marta")
    marta.say("/start")
    await marta.expect("Hablar con un asesor")
    thread = (await open_handoff(marta, fake)).message_thread_id
    assert thread is not None

    async def turns_finished() -> bool:
        # A reply is out before its turn's last save; the lock goes when that save is done.
        locks = [redis_key("lock", "telegram", str(c.id)) for c in (ana, marta)]
        return not await redis_client.exists(*locks)

    await eventually(turns_finished, "the turns to finish")
    bot.kill9()
    # Written while the bot is down: Telegram keeps them.
    ana.say(ANA[1])
    marta.say("¿sigue ahí alguien?")
    await bot.start()
    await ana.expect("Gracias, Ana")
    assert count(ana.messages(), "nombre completo") == 1, ana.transcript()
    await wait_for_text(fake, agents, "sigue ahi alguien", thread_id=thread)
    fake.agent_text(thread, "Sí Marta, aquí sigo")
    await marta.expect("aqui sigo")
    assert [m.text for m in marta.window()] == ["Luis (asesor/a): Sí Marta, aquí sigo"], (
        marta.transcript()
    )


async def test_kill9_during_a_turn_does_not_silence_the_customer(
    bot: BotProcess,
    fleet: dict[str, BotProcess],
    new_chat: NewChat,
    sandbox: Sandbox,
    redis_client: aioredis.Redis,
) -> None:
    """kill -9 while a message waits on WispHub; after a restart the message that was in
    flight is answered (taken over from the journal, within about the lock's lease plus one
    sweep), once."""
    # The other bots share the database: any of them would take the turn over, and answer
    # through its own fake Bot API. (They start again for the tests that need them.)
    for name in ("timeout", "webhook"):
        if fleet[name].running:
            await fleet[name].terminate()
    chat = new_chat()
    await _document_look_up_in_flight(chat, sandbox, delay=2.0)
    start = chat.mark()
    bot.kill9()
    try:
        await bot.start()
        await chat.expect("nombre completo", timeout=30)
        assert len(chat.messages()[start:]) == 1, chat.transcript()
    finally:
        # Should it not lapse, it must not block the tests that follow.
        await redis_client.delete(redis_key("lock", "telegram", str(chat.id)))


async def test_a_reply_telegram_refused_is_sent_before_the_next_one(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """Telegram refuses the greeting; it stays in the outbox and goes out, in order, before the
    answer to the customer's next message."""
    chat = new_chat()
    fake.fail("sendMessage", 403, count=1, chat_id=chat.id)
    chat.say("/start")

    async def refused() -> bool:
        return fake.refused(chat.id, 403)

    await eventually(refused, "the refused greeting")
    assert chat.messages() == []
    chat.say("Soy cliente")
    await chat.expect("documento")
    texts = [fold(m.text or "") for m in chat.messages()]
    # The greeting and its menu are one message (one bubble per turn), sent before the answer.
    assert "asistente virtual" in texts[0], chat.transcript()
    assert "elige una opcion" in texts[0], chat.transcript()
    assert "documento" in texts[1], chat.transcript()


async def test_wisphub_failing_then_recovering(
    bot: BotProcess, new_chat: NewChat, sandbox: Sandbox
) -> None:
    """WispHub down: a clear answer within 15 s with an agent offered; back up: the step works."""
    chat = new_chat()
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect("documento")
    sandbox.add_fault("^/clientes/", status=500, count=None)
    chat.say(ANA[0])
    await chat.expect("no responde en este momento", timeout=15)
    await chat.expect("Hablar con un asesor")
    assert count(chat.window(), "nombre completo") == 0
    sandbox.clear_faults()
    chat.say(ANA[0])
    await chat.expect("nombre completo")
    chat.say(ANA[1])
    await chat.expect("Gracias, Ana")


async def test_junk_input_gets_clear_answers_and_keeps_the_session(
    bot: BotProcess, new_chat: NewChat
) -> None:
    """10,000 characters, stickers, photos and odd Unicode: answers, no crash, step kept."""
    chat = new_chat()
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.say("lorem ipsum " * 834)  # 10,008 characters, none of them a need
    await chat.expect("muy largo")
    await chat.expect("No entendi")
    chat.sticker()
    await chat.expect("solo puedo leer")
    chat.photo()
    await chat.expect("solo puedo leer")
    for odd in [
        "\u202eمرحبا بكم\u202c",  # right-to-left override
        "\u200b\u200d\ufeff",  # zero-width only
        "🙂🙂🔥👨‍👩‍👧",  # emoji and a ZWJ sequence
        "Z̸̢͉a̵l̷g̶o̴",  # stacked combining marks
        "𝟏𝟎𝟐𝟎",  # mathematical digits
    ]:
        chat.say(odd)
        await chat.expect("No entendi")
    chat.press("Soy cliente")
    await chat.expect("documento")
    chat.sticker()
    await chat.expect("solo puedo leer")
    chat.say(ANA[0])  # the document step was kept through the sticker
    await chat.expect("nombre completo")
    status, _ = await bot.request("GET", "/healthz")
    assert status == 200
    assert bot.running


async def test_stories_checklists_and_unknown_types_get_an_answer_or_reach_the_agents(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """Content the bot cannot read (shapes in tests/fixtures/telegram/) is answered like a
    photo, never with silence; during a handoff the agents get a copy."""
    unreadable = fixture("telegram/unreadable_messages.yaml")
    chat = new_chat()
    chat.say("/start")
    await chat.expect("Soy cliente")
    for name in ("story", "checklist", "future"):
        chat.send(unreadable[name])
        await chat.expect("solo puedo leer")

    await identify(chat, *ANA)
    card = await open_handoff(chat, fake)
    for name in ("story", "future"):
        sent_id = chat.send(unreadable[name])["message"]["message_id"]

        def copied(m: Sent, sent_id: int = sent_id) -> bool:
            return (
                m.method == "copyMessage"
                and m.from_chat_id == chat.id
                and m.source_message_id == sent_id
                and m.message_thread_id == card.message_thread_id
            )

        await wait_for(fake, fake.agents_chat_id, copied, f"copying the customer's {name}")
    assert count(chat.window(), "solo puedo leer") == 0


# ---- the handoff timeout (the bot with HANDOFF_TIMEOUT=2) --------------------------------


async def test_no_agent_answer_within_the_timeout_offers_a_ticket(
    timeout_bot: BotProcess, timeout_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """Nobody answers in the topic for HANDOFF_TIMEOUT: the customer is offered a ticket."""
    chat = new_chat(on=timeout_fake)
    await identify(chat, *ANA)
    await open_handoff(chat, timeout_fake)
    await chat.expect("siguen ocupados")
    await chat.expect("Abrir un ticket")
    chat.press("Abrir un ticket")
    await chat.expect("pocas palabras")


# ---- webhook mode (the webhook bot, whose WispHub is a dead port) ----------------------------


async def test_webhook_checks_the_secret_and_the_body(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """The webhook is registered with its secret; wrong or missing secret 403, a body that is
    not JSON, or not an update, 400."""
    assert webhook_fake.webhook["url"] == f"{webhook_bot.url}/webhooks/telegram"
    assert webhook_fake.webhook["secret_token"] == WEBHOOK_SECRET
    chat = new_chat(on=webhook_fake)
    rejected = webhook_fake.user_text(chat.id, "/start")
    assert await post_update(webhook_bot, rejected, secret=None) == 403
    assert await post_update(webhook_bot, rejected, secret="wrong-secret") == 403
    assert await post_update(webhook_bot, b'{"update_id": 1, "message": ') == 400
    assert await post_update(webhook_bot, b"\xff\xfe not json") == 400
    assert await post_update(webhook_bot, {"update_id": "x", "message": "hola"}) == 400

    assert await post_update(webhook_bot, chat.say("/start")) == 200
    await chat.expect("Soy cliente")
    assert count(chat.messages(), "asistente virtual") == 1, "a rejected call was processed"


async def test_webhook_duplicate_update_is_handled_once(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """Telegram retries a webhook call: the second copy of the update is dropped."""
    chat = new_chat(on=webhook_fake)
    update = chat.say("/start")
    assert await post_update(webhook_bot, update) == 200
    assert await post_update(webhook_bot, update) == 200
    await chat.expect("Soy cliente")
    assert await post_update(webhook_bot, chat.press("Soy cliente")) == 200
    await chat.expect("documento")
    assert count(chat.messages(), "asistente virtual") == 1, chat.transcript()


async def test_webhook_a_story_or_checklist_gets_the_media_answer(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """Through the service's webhook too: content the bot cannot read is answered."""
    unreadable = fixture("telegram/unreadable_messages.yaml")
    chat = new_chat(on=webhook_fake)
    for name in ("story", "checklist", "future"):
        assert await post_update(webhook_bot, chat.send(unreadable[name])) == 200
        await chat.expect("solo puedo leer")


async def test_a_button_press_is_answered_in_the_webhook_answer(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """The webhook's answer to a press names answerCallbackQuery (Telegram runs it: the spinner
    stops at once); the bot makes no Bot API call of its own for it, and a text gets none."""
    chat = new_chat(on=webhook_fake)
    assert await post_update(webhook_bot, chat.say("/start")) == 200
    await chat.expect("Soy cliente")
    press = chat.press("Soy cliente")
    status, answer = await webhook_call(webhook_bot, press)  # the fake runs what it names
    assert status == 200
    assert json.loads(answer) == {
        "method": "answerCallbackQuery",
        "callback_query_id": press["callback_query"]["id"],
    }
    await chat.expect("documento")
    answers = [c for c in webhook_fake.calls if c.method == "answerCallbackQuery"]
    mine = [
        c for c in answers if c.params.get("callback_query_id") == press["callback_query"]["id"]
    ]
    assert [c.content_type for c in mine] == ["webhook"]  # not also a call from the bot
    status, answer = await webhook_call(webhook_bot, chat.say("1020304050"))
    assert (status, answer) == (200, "ok")


async def test_readyz_is_503_when_wisphub_is_unreachable(
    webhook_bot: BotProcess,
) -> None:
    """A WispHub base URL on a dead port: alive (200) but not ready (503)."""
    assert (await webhook_bot.request("GET", "/healthz"))[0] == 200
    status, body = await webhook_bot.request("GET", "/readyz")
    assert status == 503, body
    assert json.loads(body)["wisphub"] is False


async def test_webhook_sigterm_finishes_the_message_in_flight(
    webhook_bot: BotProcess, webhook_fake: FakeTelegram, new_chat: NewChat
) -> None:
    """SIGTERM right after a webhook call was answered: the message is still handled (here:
    WispHub is unreachable, so the customer hears so) and the process exits 0.

    Last of the webhook tests: it stops that bot."""
    chat = new_chat(on=webhook_fake)
    assert await post_update(webhook_bot, chat.say("/start")) == 200
    await chat.expect("Soy cliente")
    assert await post_update(webhook_bot, chat.press("Soy cliente")) == 200
    await chat.expect("documento")
    assert await post_update(webhook_bot, chat.say(ANA[0])) == 200
    assert await webhook_bot.terminate() == 0, webhook_bot.logs()
    assert count(chat.window(), "no responde en este momento") == 1, chat.transcript()


# ---- operations -------------------------------------------------------------------------------


async def test_health_readiness_and_metrics(bot: BotProcess, new_chat: NewChat) -> None:
    """/healthz 200, /readyz 200 with Redis and WispHub up, /metrics counts messages in."""
    assert (await bot.request("GET", "/healthz"))[0] == 200
    status, body = await bot.request("GET", "/readyz")
    assert status == 200, body
    assert json.loads(body)["ready"] is True
    chat = new_chat()
    chat.say("/start")
    await chat.expect("Soy cliente")
    status, text = await bot.request("GET", "/metrics")
    assert status == 200
    assert re.search(r'^wispbot_messages_in_total\{channel="telegram"\} [1-9]', text, re.M), text


async def test_sigterm_finishes_in_flight_messages_and_exits_0(
    bot: BotProcess, new_chat: NewChat, sandbox: Sandbox
) -> None:
    """SIGTERM while a message waits on a slow WispHub: the reply still goes out; exit 0.

    Last in the file: it stops the shared bot (a later test would start it again)."""
    chat = new_chat()
    await _document_look_up_in_flight(chat, sandbox, delay=1.0)
    assert await bot.terminate() == 0, bot.logs()
    assert count(chat.window(), "nombre completo") == 1, chat.transcript()
