"""Notices, the dialog's side (issue 15): subscribing when a notice is promised ("Te avisaremos"
only then), the outage-resolved question and its answers, a question's life. The engine runs
on the demo sandbox with in-memory sessions, agents and subscriptions (tests/fakes/notices_kit.py)."""

from __future__ import annotations

from notices_kit import (
    ANA,
    CARLOS,
    LUZ,
    START,
    Bot,
    outage,
    told,
)

from flows.types import ConvKey


# -- subscribing: "Te avisaremos" only when a notice will follow ------------------------------
async def test_a_customer_told_of_an_outage_is_subscribed_to_the_router(bot: Bot) -> None:
    key = ConvKey("telegram", "9001")
    await bot.verified(key, LUZ)
    answer = await bot.send(key, "Reportar falla")
    assert "falla general" in answer
    assert "te avisaremos cuando se resuelva" in answer
    assert bot.subs is not None
    ((topic, target),) = bot.subs.of(key)
    service, until = bot.subs.of(key)[(topic, target)]
    assert (topic, service) == ("outage", 12)
    assert target.isdigit()
    assert until > START


async def test_no_promise_of_a_notice_when_notices_are_off(quiet_bot: Bot) -> None:
    key = ConvKey("telegram", "9002")
    await quiet_bot.verified(key, LUZ)
    answer = await quiet_bot.send(key, "Reportar falla")
    assert "falla general" in answer
    assert "avisaremos" not in answer
    assert "vuelve a escribirnos mas tarde" in answer


async def test_no_promise_of_a_notice_to_a_customer_who_opted_out(bot: Bot) -> None:
    key = ConvKey("telegram", "9003")
    await bot.verified(key, LUZ)
    await bot.send(key, "/silenciar")
    answer = await bot.send(key, "Reportar falla")
    assert "avisaremos" not in answer
    assert bot.subs is not None
    assert bot.subs.of(key) == {}


async def test_a_ticket_the_bot_opened_is_subscribed(bot: Bot) -> None:
    key = ConvKey("telegram", "9004")
    await bot.verified(key, ANA)
    await bot.send(key, "Reportar falla")
    await bot.send(key, "Sin internet")
    await bot.send(key, "Sigue igual")
    await bot.send(key, "No navega desde ayer")
    answer = await bot.send(key, "Confirmar")
    assert "abri el ticket #" in answer
    assert "te avisaremos por aqui cuando cambie su estado" in answer
    assert bot.subs is not None
    assert [t for t, _ in bot.subs.of(key)] == ["ticket"]


async def test_an_agents_ticket_is_subscribed_and_told_to_the_customer(bot: Bot) -> None:
    key = ConvKey("telegram", "9005")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    told = await bot.agent(key, "/ticket revisar el cobro")
    assert "ticket #" in told
    assert "te avisaremos por aqui cuando cambie su estado" in told
    assert bot.subs is not None
    assert [t for t, _ in bot.subs.of(key)] == ["ticket"]


# -- outage resolved -----------------------------------------------------------------------------
async def test_outage_resolved_asks_whether_internet_is_back(bot: Bot) -> None:
    key = ConvKey("telegram", "9010")
    await bot.verified(key, LUZ)
    text = told(await bot.notice(key, outage()))
    assert "el servicio en tu zona se restablecio. ¿ya tienes internet?" in text
    assert "no, sigo sin servicio" in text
    assert "/silenciar" in text  # every notice says how to stop them
    answer = await bot.send(key, "Sí")
    assert "que bien" in answer
    assert "algo mas" in answer


async def test_still_no_service_goes_to_the_fault_report_without_the_outage_check(
    bot: Bot,
) -> None:
    """Luz's router still shows the outage in the sandbox: the check is skipped all the same."""
    key = ConvKey("telegram", "9011")
    await bot.verified(key, LUZ)
    await bot.notice(key, outage())
    answer = await bot.press(key, "outage_no")
    assert "que problema tienes" in answer
    assert "falla general" not in answer


async def test_a_typed_no_answers_still_no_service(bot: Bot) -> None:
    key = ConvKey("telegram", "9018")
    await bot.verified(key, LUZ)
    await bot.notice(key, outage())
    assert "que problema tienes" in await bot.send(key, "no")


async def test_still_no_service_after_the_verification_expired_verifies_first(bot: Bot) -> None:
    key = ConvKey("telegram", "9012")
    await bot.verified(key, LUZ)
    bot.clock.now += 3 * 3600
    await bot.notice(key, outage())
    answer = await bot.send(key, "No, sigo sin servicio")
    assert "confirmemos tu identidad" in answer
    assert "documento" in answer


async def test_a_notice_answered_hours_later_is_still_understood(bot: Bot) -> None:
    key = ConvKey("telegram", "9013")
    await bot.verified(key, LUZ)
    await bot.notice(key, outage())
    bot.clock.now += 2 * 3600  # past the idle reset, within the question's life
    answer = await bot.send(key, "si")
    assert "que bien" in answer
    assert "inactividad" not in answer


async def test_a_notice_answered_after_its_life_starts_again_cleanly(bot: Bot) -> None:
    key = ConvKey("telegram", "9014")
    await bot.verified(key, LUZ)
    await bot.notice(key, outage())
    bot.clock.now += 30 * 3600
    answer = await bot.press(key, "yes")  # the old button
    assert "inactividad" in answer
    assert "soy cliente" in answer
    assert "que bien" not in answer
    assert (await bot.session(key)).state == "main.menu"


async def test_an_answer_that_is_not_the_questions_is_handled_at_the_menu(bot: Bot) -> None:
    key = ConvKey("telegram", "9015")
    await bot.verified(key, CARLOS)
    await bot.notice(key, outage(11))
    answer = await bot.send(key, "Mis tickets")
    assert "tickets" in answer
    assert "no entendi" not in answer
    assert (await bot.session(key)).state == "client.menu"


async def test_no_notice_during_a_handoff(bot: Bot) -> None:
    key = ConvKey("telegram", "9016")
    await bot.verified(key, ANA)
    await bot.send(key, "Hablar con un asesor")
    assert await bot.notice(key, outage(10)) is None
    assert (await bot.session(key)).state == "agent.waiting"


async def test_a_notice_to_a_conversation_without_a_session(bot: Bot) -> None:
    key = ConvKey("telegram", "9017")
    assert "ya tienes internet" in told(await bot.notice(key, outage()))
    assert "que bien" in await bot.send(key, "si")
