"""Customer media from another channel reaching the agents' Telegram topic (fake Bot API and
channel: tests/bot/conftest.py)."""

from __future__ import annotations

import pytest
from telegram_api import FakeTelegram

from bot.channels.base import AgentMessage, DeliveryError
from bot.channels.telegram.channel import TelegramChannel
from bot.channels.telegram.topics import TelegramAgents, card_text
from flows.ports import AgentRequest
from flows.texts import Texts
from flows.types import ConvKey, Inbound, Kind, Media

WA = ConvKey("whatsapp", "573001112233")


def media_event(media: Media) -> Inbound:
    return Inbound(key=WA, event_id="wamid.X", kind=Kind.MEDIA, media=media)


async def topic(channel: TelegramChannel) -> int:
    return await channel.create_topic("Ana · WhatsApp")


async def test_whatsapp_photo_is_uploaded_to_the_topic(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    asked: list[str] = []

    async def fetch(media_id: str) -> tuple[bytes, str]:
        asked.append(media_id)
        return b"\xff\xd8\xff jpeg", "image/jpeg"

    agents = TelegramAgents(channel, "es", {"whatsapp": fetch})
    thread = await topic(channel)
    await agents.forward(thread, media_event(Media("photo", "7001", "el router")), "[foto]")
    (sent,) = fake.sent(fake.agents_chat_id)
    assert (sent.method, sent.message_thread_id, sent.text) == ("sendPhoto", thread, "el router")
    assert asked == ["7001"]


async def test_a_pdf_goes_as_a_document_labelled_when_without_caption(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    async def fetch(media_id: str) -> tuple[bytes, str]:
        return b"%PDF-1.4", "application/pdf"

    agents = TelegramAgents(channel, "es", {"whatsapp": fetch})
    thread = await topic(channel)
    await agents.forward(thread, media_event(Media("document", "7002")), "[documento]")
    (sent,) = fake.sent(fake.agents_chat_id)
    assert (sent.method, sent.text) == ("sendDocument", "[documento]")


async def test_a_failed_download_still_tells_the_agents(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    async def fetch(media_id: str) -> tuple[bytes, str]:
        raise DeliveryError("Graph gave no download URL for the media")

    agents = TelegramAgents(channel, "es", {"whatsapp": fetch})
    thread = await topic(channel)
    await agents.forward(thread, media_event(Media("audio", "7003")), "[El cliente envió audio]")
    (sent,) = fake.sent(fake.agents_chat_id)
    assert (sent.method, sent.text) == ("sendMessage", "[El cliente envió audio]")


async def test_a_location_is_posted_as_a_map_link(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    agents = TelegramAgents(channel, "es")
    thread = await topic(channel)
    where = Media("location", "4.65,-74.05", "Casa")
    await agents.forward(thread, media_event(where), "[ubicación]")
    (sent,) = fake.sent(fake.agents_chat_id)
    assert sent.text == "[ubicación] Casa https://www.google.com/maps?q=4.65,-74.05"


async def test_without_a_media_source_the_media_is_described(
    fake: FakeTelegram, channel: TelegramChannel
) -> None:
    agents = TelegramAgents(channel, "es")
    thread = await topic(channel)
    await agents.forward(thread, media_event(Media("photo", "7004")), "[El cliente envió photo]")
    (sent,) = fake.sent(fake.agents_chat_id)
    assert (sent.method, sent.text) == ("sendMessage", "[El cliente envió photo]")


@pytest.mark.parametrize(
    ("agent_ids", "user_id", "admitted"),
    [
        (frozenset(), 6660, True),  # no list: every member of the group, as before
        (frozenset(), None, True),
        (frozenset({5001, 5002}), 5002, True),
        (frozenset({5001, 5002}), 6660, False),
        (frozenset({5001, 5002}), None, False),  # an admin posting as the group: who is it?
    ],
)
async def test_only_listed_agents_act_in_a_topic_others_are_told_in_one_line(
    fake: FakeTelegram,
    channel: TelegramChannel,
    agent_ids: frozenset[int],
    user_id: int | None,
    admitted: bool,
) -> None:
    agents = TelegramAgents(channel, "es", agent_ids=agent_ids)
    thread = await topic(channel)
    message = AgentMessage(thread, 7, "/cerrar", "Intruso", user_id=user_id)
    assert await agents.admit(message) is admitted
    notices = [m.text or "" for m in fake.sent(fake.agents_chat_id)]
    if admitted:
        assert notices == []
    else:
        [notice] = notices
        assert notice.startswith("Intruso: no estás en la lista de asesores"), notice
        assert "\n" not in notice


@pytest.mark.parametrize(
    ("lang", "asked", "line"),
    [
        ("es", "cancel_service", "Solicitud: Cancelar el servicio"),
        ("es", "payment_report", "Solicitud: Reportar un pago"),
        ("en", "move", "Request: Moving house"),
    ],
)
def test_the_card_names_what_the_customer_asked_for_first(lang: str, asked: str, line: str) -> None:
    card = card_text(AgentRequest(WA, "Ana", request=asked), Texts(lang))
    assert card.splitlines()[0] == line
    assert "Ana" in card


def test_a_plain_handoff_card_names_no_request() -> None:
    card = card_text(AgentRequest(WA, "Ana"), Texts("es"))
    assert "Solicitud" not in card
