"""Notices, the dialog's side (issue 15): ticket updates, the rating (after a resolved ticket or
/cerrar), payment reminders and the reminder offer, opting out and back in."""

from __future__ import annotations

from datetime import datetime

import pytest
from notices_kit import (
    ANA,
    CARLOS,
    JORGE,
    WEEK,
    Bot,
    make_bot,
    resolved,
    told,
)

from bot import metrics
from flows.notices import Notice
from flows.types import ConvKey, Inbound, Kind


# -- tickets -------------------------------------------------------------------------------------
async def test_ticket_in_progress_is_plain_text_and_leaves_the_conversation(bot: Bot) -> None:
    key = ConvKey("telegram", "9020")
    await bot.verified(key, ANA)
    before = (await bot.session(key)).state
    notice = Notice("ticket_progress", 10, "ticket:4711:progress", {"ticket_id": "4711"})
    turn = await bot.notice(key, notice)
    assert turn is not None
    assert "#4711 esta en progreso" in told(turn)
    assert all(not r.options for r in turn.replies)
    assert (await bot.session(key)).state == before


async def test_a_plain_notice_to_a_new_conversation_then_a_greeting(bot: Bot) -> None:
    key = ConvKey("telegram", "9028")
    notice = Notice("ticket_progress", 10, "ticket:4711:progress", {"ticket_id": "4711"})
    assert "#4711" in told(await bot.notice(key, notice))
    answer = await bot.send(key, "hola")
    assert "asistente virtual" in answer
    assert "no entendi" not in answer


async def test_ticket_resolved_yes_asks_the_rating_then_a_comment(bot: Bot) -> None:
    key = ConvKey("telegram", "9021")
    await bot.verified(key, ANA)
    text = told(await bot.notice(key, resolved()))
    assert "#4711" in text
    assert "¿se soluciono tu problema?" in text
    assert "de 1 (mala) a 5 (excelente)" in await bot.send(key, "Sí")
    before = metrics.CSAT.labels("4")._value.get()
    answer = await bot.press(key, "score:4")
    assert metrics.CSAT.labels("4")._value.get() == before + 1  # the engine counted Turn.csat
    assert "comentario" in answer
    assert "omitir" in answer
    assert "hablar con un asesor" not in answer
    answer = await bot.send(key, "El técnico fue muy amable")
    assert "gracias por tu comentario" in answer
    assert "algo mas" in answer


async def test_the_score_reaches_the_csat_turn(bot: Bot) -> None:
    key = ConvKey("telegram", "9022")
    await bot.verified(key, ANA)
    await bot.notice(key, resolved())
    await bot.send(key, "si")
    inbound = Inbound(key, "csat-5", Kind.TEXT, text="5")
    session = await bot.rt.store.load(key)
    turn = await bot.rt.engine.dialog.process(inbound, session)
    assert turn.csat == 5


async def test_ticket_not_solved_files_a_new_ticket_referring_to_the_old_one(bot: Bot) -> None:
    key = ConvKey("telegram", "9023")
    await bot.verified(key, ANA)
    await bot.notice(key, resolved("4711"))
    answer = await bot.send(key, "No")
    assert "ticket nuevo que haga referencia al #4711" in answer
    assert "hablar con un asesor" in answer  # always open here
    assert "pocas palabras" in await bot.press(key, "reopen")
    await bot.send(key, "Sigue sin funcionar")
    answer = await bot.send(key, "Confirmar")
    assert "abri el ticket #" in answer
    sandbox = bot.rt.sandbox
    assert sandbox is not None
    post = [r for r in sandbox.requests if r.method == "POST" and r.path == "/tickets/"][-1]
    assert "Reabre el ticket #4711" in str(post.fields.get("descripcion"))


async def test_reopening_while_another_ticket_is_open_tells_that_one(bot: Bot) -> None:
    key = ConvKey("telegram", "9027")
    await bot.verified(key, ANA)
    for step in ("Reportar falla", "Sin internet", "Sigue igual", "No navega", "Confirmar"):
        await bot.send(key, step)
    await bot.notice(key, resolved("4711"))
    await bot.send(key, "No")
    answer = await bot.press(key, "reopen")
    assert "ya tienes abierto el ticket #4800" in answer
    assert "reopens" not in (await bot.session(key)).data


async def test_ticket_not_solved_outside_hours_offers_no_agent() -> None:
    async for b in make_bot(hours="sat 08:00-09:00"):
        key = ConvKey("telegram", "9024")
        await b.verified(key, ANA)
        await b.notice(key, resolved())
        answer = await b.send(key, "No")
        assert "abrir un ticket nuevo" in answer
        assert "hablar con un asesor" not in answer


async def test_a_low_score_offers_an_agent_within_hours(bot: Bot) -> None:
    key = ConvKey("telegram", "9025")
    await bot.verified(key, ANA)
    await bot.notice(key, resolved())
    await bot.send(key, "si")
    answer = await bot.send(key, "1")
    assert "lamentamos" in answer
    assert "hablar con un asesor" in answer
    assert "te comunico con un asesor" in await bot.send(key, "Hablar con un asesor")


async def test_a_notice_that_cannot_be_told_sends_nothing(bot: Bot) -> None:
    key = ConvKey("telegram", "9026")
    assert await bot.notice(key, Notice("ticket_resolved", 10, "ticket:x", {})) is None
    assert await bot.notice(key, Notice("payment_reminder", 10, "r", {"date": "soon"})) is None
    assert await bot.notice(key, Notice("no_such_kind", 10, "x")) is None


# -- rating after /cerrar ------------------------------------------------------------------------
async def test_a_closed_handoff_asks_the_rating_and_the_agents_see_it(bot: Bot) -> None:
    key = ConvKey("telegram", "9030")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    await bot.agent(key, "Hola Ana, soy Luis")
    answer = await bot.agent(key, "/cerrar")
    assert "cerro la conversacion" in answer
    assert "algo mas" in answer  # the menu is still there, before the question
    assert "de 1 (mala) a 5 (excelente)" in answer
    await bot.press(key, "score:5")
    topic = bot.agents.topics[(await bot.session(key)).data["topic"]]
    assert "Calificación del cliente: 5/5" in topic.posts
    await bot.send(key, "Muy buena atención")
    assert "Comentario del cliente (5/5): Muy buena atención" in topic.posts


async def test_the_menu_under_the_rating_still_works(bot: Bot) -> None:
    key = ConvKey("telegram", "9031")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    await bot.agent(key, "/cerrar")
    assert "valor mensual" in await bot.press(key, "account")


async def test_no_rating_for_a_customer_who_opted_out(bot: Bot) -> None:
    key = ConvKey("telegram", "9032")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    await bot.send(key, "/silenciar")
    answer = await bot.agent(key, "/cerrar")
    assert "cerro la conversacion" in answer
    assert "califica" not in answer


# -- payments ------------------------------------------------------------------------------------
async def test_payment_reminder_and_promise_due_tell_amount_and_date(bot: Bot) -> None:
    key = ConvKey("telegram", "9040")
    params = {"date": "2026-12-05", "amount": "179800.00"}
    text = told(await bot.notice(key, Notice("payment_reminder", 11, "reminder:11", params)))
    assert "5 de diciembre de 2026" in text
    assert "$ 179.800" in text
    assert "/silenciar" in text
    params = {"date": "2026-11-27"}
    text = told(await bot.notice(key, Notice("promise_due", 11, "promise:11", params)))
    assert "manana, 27 de noviembre de 2026, vence tu promesa de pago" in text


async def test_the_account_with_a_balance_offers_cut_off_reminders(bot: Bot) -> None:
    key = ConvKey("telegram", "9041")
    await bot.verified(key, JORGE)
    answer = await bot.send(key, "Estado de cuenta")
    assert "algo mas" in answer
    assert "¿quieres que te avise antes de tu fecha de corte (5 de diciembre de 2026)?" in answer
    answer = await bot.send(key, "Sí")
    assert "te avisare unos dias antes" in answer
    assert bot.subs is not None
    ((topic, target),) = bot.subs.of(key)
    assert (topic, target) == ("reminder", "13")
    until = bot.subs.of(key)[(topic, target)][1]
    assert until == datetime.fromisoformat("2026-12-06T00:00:00-05:00").timestamp()
    # offered once a session
    assert "quieres que te avise" not in await bot.send(key, "Estado de cuenta")


async def test_declining_reminders_subscribes_nothing(bot: Bot) -> None:
    key = ConvKey("telegram", "9042")
    await bot.verified(key, JORGE)
    await bot.send(key, "Estado de cuenta")
    assert "no te enviare recordatorios" in await bot.send(key, "No")
    assert bot.subs is not None
    assert bot.subs.of(key) == {}


async def test_no_reminder_offer_without_a_balance_or_without_notices(
    bot: Bot, quiet_bot: Bot
) -> None:
    key = ConvKey("telegram", "9043")
    await bot.verified(key, ANA)
    assert "quieres que te avise" not in await bot.send(key, "Estado de cuenta")
    await quiet_bot.verified(key, JORGE)
    assert "quieres que te avise" not in await quiet_bot.send(key, "Estado de cuenta")


async def test_a_registered_promise_is_subscribed_until_its_date_ends(bot: Bot) -> None:
    key = ConvKey("telegram", "9044")
    await bot.verified(key, CARLOS)
    await bot.send(key, "Promesa de pago")
    answer = await bot.send(key, "1")
    assert "registre tu promesa" in answer
    assert "te recordare el dia antes" in answer
    assert bot.subs is not None
    ((topic, target),) = bot.subs.of(key)
    assert (topic, target) == ("promise", "11")
    until = bot.subs.of(key)[(topic, target)][1]
    assert until == datetime.fromisoformat("2026-11-27T00:00:00-05:00").timestamp()


# -- opting out ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "words", ["/silenciar", "no quiero avisos", "STOP", "/mute", "stop notifications", "Stop"]
)
async def test_opt_out_words_work_from_any_state(bot: Bot, words: str) -> None:
    key = ConvKey("telegram", f"905{len(words)}")
    await bot.verified(key, ANA)
    await bot.send(key, "Reportar falla")  # waiting for a category
    answer = await bot.send(key, words)
    assert "no te enviare mas avisos" in answer
    assert "/avisos" in answer
    assert "sin internet" in answer  # the step they were in is offered again
    assert bot.subs is not None
    assert await bot.subs.opted_out(key)
    assert "volveras a recibir avisos" in await bot.send(key, "/avisos")
    assert not await bot.subs.opted_out(key)


async def test_opting_out_during_a_handoff_is_not_relayed(bot: Bot) -> None:
    key = ConvKey("telegram", "9060")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    topic = bot.agents.topics[(await bot.session(key)).data["topic"]]
    posts = len(topic.posts)
    assert "no te enviare mas avisos" in await bot.send(key, "STOP")
    assert len(topic.posts) == posts
    assert (await bot.session(key)).state == "agent.waiting"


async def test_opting_out_when_notices_are_off_says_so(quiet_bot: Bot) -> None:
    key = ConvKey("telegram", "9061")
    assert "no enviamos avisos automaticos" in await quiet_bot.send(key, "/silenciar")


async def test_english_notices_and_words() -> None:
    async for b in make_bot():
        key = ConvKey("telegram", "9062")
        session = b.rt.engine.dialog.new_session("en")
        await b.rt.store.save(key, session, WEEK)
        text = told(await b.notice(key, resolved()))
        assert "is your problem solved?" in text
        assert "/mute" in text
        assert "rate the help" in await b.send(key, "Yes")
        assert "won't send you more notices" in await b.send(key, "stop notifications")


async def test_a_rating_from_a_customer_without_a_topic_opens_one_for_the_agents(
    bot: Bot,
) -> None:
    key = ConvKey("telegram", "9031")
    await bot.verified(key, ANA)
    assert "topic" not in (await bot.session(key)).data
    await bot.notice(key, resolved())
    await bot.send(key, "Sí")
    await bot.press(key, "score:2")
    topic = bot.agents.topics[(await bot.session(key)).data["topic"]]
    assert any(post.startswith("[card]") and "rating" in post for post in topic.posts)
    assert "Calificación del cliente: 2/5" in topic.posts
    await bot.send(key, "El técnico nunca llegó")
    assert "Comentario del cliente (2/5): El técnico nunca llegó" in topic.posts
