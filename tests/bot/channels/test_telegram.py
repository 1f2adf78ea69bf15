"""The Telegram channel against the fake Bot API, through aiogram's real HTTP client."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import Update
from fixtures import fixture
from pydantic import SecretStr
from telegram_api import FakeTelegram

from bot.channels.base import AgentMessage, DeliveryError
from bot.channels.telegram import (
    MAX_FETCHES_UNPLACED,
    BadUpdate,
    TelegramChannel,
    TelegramPolling,
    api_error,
    decode_callback_data,
    handle_update,
    make_bot,
    quick_update,
    split_text,
    update_to_agent_message,
    update_to_inbound,
)
from flows.types import ConvKey, Inbound, Kind, Media, Option, Outbound

CHAT = 1001
KEY = ConvKey("telegram", str(CHAT))


def as_update(raw: dict[str, Any]) -> Update:
    """The fake's update dict as aiogram parses it off the wire."""
    return Update.model_validate(raw)


def private_message(**fields: Any) -> dict[str, Any]:
    message = {
        "message_id": 7,
        "date": 1_700_000_000,
        "chat": {"id": CHAT, "type": "private", "first_name": "Ana"},
        "from": {"id": CHAT, "is_bot": False, "first_name": "Ana"},
    }
    message.update(fields)
    return message


# ---- updates in -------------------------------------------------------------------------------


def test_text_becomes_text_inbound(fake: FakeTelegram) -> None:
    raw = fake.user_text(CHAT, "hola, no tengo internet")
    inbound = update_to_inbound(as_update(raw))
    assert inbound == Inbound(
        key=KEY,
        event_id=str(raw["update_id"]),
        kind=Kind.TEXT,
        text="hola, no tengo internet",
        user_id=str(CHAT),
        display_name="Ana Ruiz",
    )


def test_command_keeps_its_slash(fake: FakeTelegram) -> None:
    inbound = update_to_inbound(as_update(fake.user_text(CHAT, "/start")))
    assert inbound is not None
    assert (inbound.kind, inbound.text) == (Kind.TEXT, "/start")


def test_own_contact_gives_the_phone(fake: FakeTelegram) -> None:
    inbound = update_to_inbound(as_update(fake.user_contact(CHAT, "+573001112233")))
    assert inbound is not None
    assert (inbound.kind, inbound.phone) == (Kind.CONTACT, "+573001112233")


def test_someone_elses_contact_is_not_taken_as_the_senders_phone(fake: FakeTelegram) -> None:
    raw = fake.user_contact(CHAT, "+573009998877", user_id=4242)
    inbound = update_to_inbound(as_update(raw))
    assert inbound is not None
    assert inbound.kind is Kind.MEDIA
    assert inbound.phone is None


def test_sticker_and_photo_are_media_with_their_message_id(fake: FakeTelegram) -> None:
    sticker = fake.user_sticker(CHAT)
    photo = fake.user_photo(CHAT, caption="mi router")
    got_sticker = update_to_inbound(as_update(sticker))
    got_photo = update_to_inbound(as_update(photo))
    assert got_sticker is not None
    assert got_photo is not None
    assert got_sticker.kind is Kind.MEDIA
    assert got_sticker.media == Media("sticker", str(sticker["message"]["message_id"]))
    assert got_photo.media == Media("photo", str(photo["message"]["message_id"]), "mi router")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"update_id": 5, "edited_message": private_message(text="x")}, id="edited"),
        pytest.param(
            {
                "update_id": 6,
                "message": private_message(
                    text="hola grupo",
                    chat={"id": -100555, "type": "supergroup", "title": "Vecinos"},
                ),
            },
            id="group",
        ),
        pytest.param(
            {
                "update_id": 7,
                "channel_post": {
                    "message_id": 1,
                    "date": 1_700_000_000,
                    "chat": {"id": -100666, "type": "channel", "title": "Noticias"},
                    "text": "promo",
                },
            },
            id="channel-post",
        ),
    ],
)
def test_events_outside_private_chats_are_ignored(raw: dict[str, Any]) -> None:
    assert update_to_inbound(as_update(raw)) is None


def _fixture_updates(fake: FakeTelegram) -> dict[str, dict[str, Any]]:
    """One update of every kind a customer (or an agent) sends."""
    no_last_name = fake.user_text(CHAT, "hola", last_name=None)
    no_sender: dict[str, Any] = {"update_id": 90, "message": private_message(text="sin remitente")}
    del no_sender["message"]["from"]
    foreign_press = fake.user_press(CHAT, "ab12.menu", 1)
    foreign_press["callback_query"]["message"]["chat"] = {"id": -100555, "type": "supergroup"}
    no_data = fake.user_press(CHAT, "x", 1)
    del no_data["callback_query"]["data"]
    return {
        "text": fake.user_text(CHAT, "hola, no tengo internet"),
        "command": fake.user_text(CHAT, "/start"),
        "username": fake.user_text(CHAT, "1020304050", username="ana_r"),
        "no-last-name": no_last_name,
        "no-sender": no_sender,
        "empty-text": {"update_id": 91, "message": private_message(text="")},
        "press": fake.user_press(CHAT, "ab12.svc:1", 1),
        "press-foreign-data": fake.user_press(CHAT, "not ours", 1),
        "press-no-data": no_data,
        "press-in-a-group": foreign_press,
        "contact": fake.user_contact(CHAT, "+573001112233"),
        "sticker": fake.user_sticker(CHAT),
        "photo": fake.user_photo(CHAT, caption="mi router"),
        "group": {
            "update_id": 92,
            "message": private_message(text="x", chat={"id": -1005, "type": "supergroup"}),
        },
        "edited": {"update_id": 93, "edited_message": private_message(text="x")},
        "agent": fake.agent_text(101, "Hola, soy Luis", from_id=5001),
    }


UNREADABLE = fixture("telegram/unreadable_messages.yaml")


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("story", "story"), ("checklist", "checklist"), ("future", "hologram_note")],
)
def test_content_the_bot_cannot_read_is_media_never_silence(
    fake: FakeTelegram, name: str, media_type: str
) -> None:
    """Stories, checklists and types newer than aiogram get the media answer (or a copy to the
    agents), like a photo: the message id is what a copy needs."""
    raw = fake.user_content(CHAT, UNREADABLE[name])
    got = update_to_inbound(as_update(raw))
    assert got is not None
    assert got.kind is Kind.MEDIA
    assert got.media == Media(media_type, str(raw["message"]["message_id"]))


def test_service_messages_still_need_no_answer(fake: FakeTelegram) -> None:
    pinned = fake.user_content(
        CHAT,
        {"pinned_message": {"message_id": 1, "date": 1, "chat": {"id": CHAT, "type": "private"}}},
    )
    access = fake.user_content(CHAT, {"write_access_allowed": {"from_request": True}})
    assert update_to_inbound(as_update(pinned)) is None
    assert update_to_inbound(as_update(access)) is None


def test_the_quick_path_gives_what_aiogram_gives_for_every_update(fake: FakeTelegram) -> None:
    quick_kinds = []
    for name, raw in _fixture_updates(fake).items():
        quick = quick_update(raw)
        if quick is None:
            continue  # aiogram's path: nothing to compare
        quick_kinds.append(name)
        assert quick.inbound == update_to_inbound(as_update(raw)), name
        query = raw.get("callback_query")
        assert quick.callback_query_id == (query["id"] if query else None), name
    # The common updates do take the quick path; the rest do not.
    assert quick_kinds == [
        "text",
        "command",
        "username",
        "no-last-name",
        "empty-text",
        "press",
        "press-foreign-data",
        "press-no-data",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"update_id": True, "message": private_message(text="x")}, id="bool-id"),
        pytest.param({"update_id": "5", "message": private_message(text="x")}, id="str-id"),
        pytest.param({"update_id": 5, "message": private_message(text=5)}, id="number-text"),
        pytest.param(
            {
                "update_id": 5,
                "message": private_message(text="x", chat={"id": "1", "type": "private"}),
            },
            id="str-chat-id",
        ),
        pytest.param({"update_id": 5, "message": "nope"}, id="message-not-an-object"),
        pytest.param({"update_id": 5, "callback_query": {"id": "1"}}, id="bare-query"),
    ],
)
def test_anything_unusual_takes_the_aiogram_path(raw: dict[str, Any]) -> None:
    assert quick_update(raw) is None


async def test_a_quick_button_press_is_answered_and_dispatched(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    raw = fake.user_press(CHAT, "ab12.plans", 1)
    await handle_update(raw, channel, sinks.inbound, sinks.agent)
    [event] = sinks.events
    assert isinstance(event, Inbound)
    assert (event.kind, event.payload) == (Kind.BUTTON, "plans")
    [answered] = fake.calls_to("answerCallbackQuery")
    assert answered.params["callback_query_id"] == raw["callback_query"]["id"]


def test_agent_topic_message_is_accepted_from_the_agents_chat(fake: FakeTelegram) -> None:
    raw = fake.agent_text(101, "Hola, soy Luis", from_id=5001)
    message = update_to_agent_message(as_update(raw), fake.agents_chat_id)
    assert message == AgentMessage(
        thread_id=101,
        message_id=raw["message"]["message_id"],
        text="Hola, soy Luis",
        agent_name="Luis",
        user_id=5001,
    )
    # The same update is no customer event.
    assert update_to_inbound(as_update(raw)) is None


def test_agent_message_from_another_chat_or_a_bot_is_refused(fake: FakeTelegram) -> None:
    other_chat = fake.agent_text(101, "hola", chat_id=-100999)
    from_bot = fake.agent_text(101, "tarjeta", from_id=fake.bot_id, is_bot=True)
    assert update_to_agent_message(as_update(other_chat), fake.agents_chat_id) is None
    assert update_to_agent_message(as_update(from_bot), fake.agents_chat_id) is None


def test_agents_chat_message_outside_a_topic_is_refused(fake: FakeTelegram) -> None:
    raw = fake.agent_text(101, "hola a todos")
    del raw["message"]["message_thread_id"]
    del raw["message"]["is_topic_message"]
    assert update_to_agent_message(as_update(raw), fake.agents_chat_id) is None


def test_anonymous_admin_in_a_topic_counts_as_an_agent(fake: FakeTelegram) -> None:
    raw = fake.agent_text(101, "Le ayudo", from_id=1087968824, is_bot=True)
    raw["message"]["sender_chat"] = {"id": fake.agents_chat_id, "type": "supergroup"}
    raw["message"]["author_signature"] = "Marta"
    message = update_to_agent_message(as_update(raw), fake.agents_chat_id)
    assert message is not None
    assert (message.agent_name, message.text) == ("Marta", "Le ayudo")
    assert message.user_id is None  # who of the admins it is, Telegram does not say


def test_agents_photo_and_document_keep_their_file_id(fake: FakeTelegram) -> None:
    photo = fake.agent_photo(101, caption="la factura")
    # Telegram lists a photo's sizes smallest first: the largest is the one worth sending.
    photo["message"]["photo"].append(
        {"file_id": "AgAD-big", "file_unique_id": "AQbig", "width": 900, "height": 900}
    )
    document = fake.agent_text(101, "")
    del document["message"]["text"]
    document["message"]["document"] = {"file_id": "BQAD-doc", "file_unique_id": "AQdoc"}
    sticker = fake.agent_text(101, "")
    del sticker["message"]["text"]
    sticker["message"]["sticker"] = {
        "file_id": "CAAD-st",
        "file_unique_id": "AQst",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    }

    got = [update_to_agent_message(as_update(u), fake.agents_chat_id) for u in (photo, document)]
    assert [m.media for m in got if m is not None] == [
        Media("photo", str(photo["message"]["message_id"]), "la factura", file_id="AgAD-big"),
        Media("document", str(document["message"]["message_id"]), file_id="BQAD-doc"),
    ]
    still = update_to_agent_message(as_update(sticker), fake.agents_chat_id)
    assert still is not None
    assert still.media is not None
    assert still.media.file_id == "CAAD-st"  # a still WebP sticker can go to WhatsApp
    sticker["message"]["sticker"]["is_animated"] = True
    animated = update_to_agent_message(as_update(sticker), fake.agents_chat_id)
    assert animated is not None
    assert animated.media is not None
    assert animated.media.file_id == ""  # WhatsApp has no animated stickers: not fetched


def test_an_agents_gif_keeps_the_animation_not_its_document_twin(fake: FakeTelegram) -> None:
    gif = fake.agent_text(101, "")
    del gif["message"]["text"]
    file = {"width": 9, "height": 9, "duration": 1}
    gif["message"]["animation"] = {"file_id": "CgAD-gif", "file_unique_id": "AQg", **file}
    gif["message"]["document"] = {"file_id": "CgAD-doc", "file_unique_id": "AQd"}

    message = update_to_agent_message(as_update(gif), fake.agents_chat_id)

    assert message is not None
    assert message.media is not None
    assert (message.media.type, message.media.file_id) == ("animation", "CgAD-gif")


async def test_download_file_gives_the_bytes_and_a_type_from_the_path(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.add_file("AgAD-big", b"\xff\xd8\xff jpeg", "photos/file_3.jpg")
    fake.add_file("BQAD-doc", b"%PDF-1.4", "documents/file_4.pdf")
    assert await channel.download_file("AgAD-big") == (b"\xff\xd8\xff jpeg", "image/jpeg")
    assert await channel.download_file("BQAD-doc") == (b"%PDF-1.4", "application/pdf")


async def test_a_failed_download_is_a_delivery_error_without_the_token(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    with pytest.raises(DeliveryError, match="invalid file_id") as unknown:
        await channel.download_file("nope")
    fake.add_file("AgAD-gone", b"x", "photos/file_9.jpg")
    del fake.downloads["photos/file_9.jpg"]  # getFile answers, the download is a 404
    with pytest.raises(DeliveryError, match="404") as gone:
        await channel.download_file("AgAD-gone")
    for err in (unknown, gone):
        assert fake.token not in str(err.value)


# ---- replies out ------------------------------------------------------------------------------


async def test_plain_text_is_sent_without_parse_mode(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "<b>Saldo</b> & más"))
    [sent] = fake.sent(CHAT)
    assert sent.text == "<b>Saldo</b> & más"
    assert sent.parse_mode is None


async def test_options_round_trip_through_callback_data(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = (
        Option("svc:1", "Soy cliente"),
        Option("plans", "Planes y precios"),
        Option("agent", "Hablar con un asesor"),
    )
    await channel.send(Outbound(KEY, "¿Qué desea hacer?", options))
    [sent] = fake.sent(CHAT)
    assert [b["text"] for b in sent.buttons] == [o.label for o in options]
    pressed = []
    for button in sent.buttons:
        raw = fake.user_press(CHAT, button["callback_data"], sent.message_id)
        inbound = update_to_inbound(as_update(raw))
        assert inbound is not None
        assert inbound.kind is Kind.BUTTON
        assert inbound.event_id == str(raw["update_id"])
        pressed.append(inbound.payload)
    assert pressed == ["svc:1", "plans", "agent"]


async def test_short_labels_sit_two_to_a_row_long_ones_alone(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    short = (Option("ok", "Ya funciona"), Option("ko", "Sigue igual"), Option("x", "Salir"))
    await channel.send(Outbound(KEY, "¿Resuelto?", short))
    long = (Option("a", "Hablar con un asesor"), Option("b", "Planes y precios"))
    await channel.send(Outbound(KEY, "Menú", long))
    rows = [[len(r) for r in (m.reply_markup or {})["inline_keyboard"]] for m in fake.sent(CHAT)]
    assert rows == [[2, 1], [1, 1]]


async def test_callback_data_refuses_personal_numbers_and_oversize(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    with pytest.raises(DeliveryError, match="7\\+ digits"):
        await channel.send(Outbound(KEY, "x", (Option("doc:1023456789", "Ana"),)))
    with pytest.raises(DeliveryError, match="64-byte"):
        await channel.send(Outbound(KEY, "x", (Option("o" * 60, "Largo"),)))
    assert fake.sent(CHAT) == []  # nothing half-sent


async def test_callback_data_never_carries_a_long_digit_run(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = tuple(Option(f"svc:{n}", f"Servicio {n}") for n in (1, 22, 333333))
    for _ in range(20):  # fresh random tokens each time
        await channel.send(Outbound(KEY, "Elija el servicio", options))
    data = [b["callback_data"] for m in fake.sent(CHAT) for b in m.buttons]
    assert len(data) == 60
    assert not [d for d in data if re.search(r"\d{7,}", d) or len(d.encode()) > 64]


async def test_long_text_arrives_split_in_order(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    lines = [f"línea {i:04d} " + "x" * 40 for i in range(200)]
    text = "\n".join(lines)
    assert 10_000 <= len(text) <= 12_000
    await channel.send(Outbound(KEY, text, (Option("menu", "Menú"),)))
    sent = await fake.wait_for_messages(CHAT, 3)
    assert len(sent) == 3
    assert all(len(m.text or "") <= 4096 for m in sent)
    assert "\n".join(m.text or "" for m in sent) == text  # cut at line ends, nothing lost
    assert [bool(m.reply_markup) for m in sent] == [False, False, True]


def test_split_without_spaces_cuts_hard() -> None:
    parts = split_text("a" * 10_000)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


async def test_429_retry_after_is_honoured(channel: TelegramChannel, fake: FakeTelegram) -> None:
    fake.fail("sendMessage", error_code=429, retry_after=1)
    await channel.send(Outbound(KEY, "Su saldo es $ 89.900"))
    assert [m.text for m in fake.sent(CHAT)] == ["Su saldo es $ 89.900"]
    first, second = fake.calls_to("sendMessage")
    assert first.error_code == 429
    assert second.error_code is None
    assert second.at - first.at >= 1.0


async def test_server_error_then_success_delivers_once(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", error_code=500)
    await channel.send(Outbound(KEY, "hola"))
    assert [m.text for m in fake.sent(CHAT)] == ["hola"]
    assert [c.error_code for c in fake.calls_to("sendMessage")] == [500, None]
    assert channel.failed_deliveries == 0


async def test_each_call_reports_its_outcome_for_readiness(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    outcomes: list[bool] = []
    channel.on_outcome = outcomes.append
    fake.fail("sendMessage", error_code=500)
    await channel.send(Outbound(KEY, "hola"))
    fake.fail("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user")
    with pytest.raises(DeliveryError):  # one customer's refusal says nothing of the channel
        await channel.send(Outbound(KEY, "hola"))
    assert outcomes == [False, True]


async def test_persistent_server_errors_give_up_after_max_retries(
    bot: Bot, fake: FakeTelegram
) -> None:
    channel = TelegramChannel(bot, per_chat_interval=0, global_rate=0, max_retries=2)
    channel.retry_backoff = 0.01
    fake.fail("sendMessage", error_code=502, count=None)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts"):
        await channel.send(Outbound(KEY, "hola"))
    await channel.aclose()
    assert len(fake.calls_to("sendMessage")) == 3
    assert channel.failed_deliveries == 1


async def test_blocked_bot_fails_at_once_without_leaking_the_token(
    channel: TelegramChannel, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.block(CHAT)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="Forbidden") as info:
        await channel.send(Outbound(KEY, "hola"))
    assert len(fake.calls_to("sendMessage")) == 1
    assert channel.failed_deliveries == 1
    assert fake.token not in str(info.value)
    assert fake.token.split(":")[1] not in caplog.text
    assert any(getattr(r, "conv", None) == "telegram:1001" for r in caplog.records)


async def test_concurrent_sends_to_one_chat_keep_their_order(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    # The first message meets two transient errors: without the per-chat lane the other nine
    # would overtake it while it backs off.
    fake.fail("sendMessage", error_code=500, count=2, chat_id=CHAT)
    other = ConvKey("telegram", "2002")
    sends = [channel.send(Outbound(KEY, f"m{i}")) for i in range(10)]
    sends.append(channel.send(Outbound(other, "otro cliente")))
    await asyncio.gather(*sends)
    assert [m.text for m in fake.sent(CHAT)] == [f"m{i}" for i in range(10)]
    assert [m.text for m in fake.sent(2002)] == ["otro cliente"]
    # The other customer was not held up behind the first one's retries.
    assert fake.sent(2002)[0].at < fake.sent(CHAT)[0].at


async def test_private_chat_pacing_allows_a_burst_then_slows(bot: Bot, fake: FakeTelegram) -> None:
    # Bounds that a busy machine cannot break: load only delays arrivals, so the paced messages
    # are checked against the time the sends began (lower bounds), and the burst against an
    # interval long enough that three trips fit in it however slow they are.
    interval = 1.0
    channel = TelegramChannel(bot, per_chat_interval=interval, global_rate=0)
    began = time.monotonic()
    for i in range(5):
        await channel.send(Outbound(KEY, f"m{i}"))
    await channel.aclose()
    at = fake.timestamps(CHAT)
    assert at[2] - began < interval  # a three-message reply goes out at once
    assert at[3] - began >= interval  # the fourth waits for the bucket to refill
    assert at[4] - began >= 2 * interval  # and the fifth for one more interval


async def test_media_with_a_source_is_copied_after_the_text(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    agents = ConvKey("telegram", str(fake.agents_chat_id))
    out = Outbound(KEY, "Luis le envió:", media=Media("photo", "55"), source_key=agents)
    await channel.send(out)
    text, copy = fake.sent(CHAT)
    assert text.text == "Luis le envió:"
    assert (copy.method, copy.from_chat_id, copy.source_message_id) == (
        "copyMessage",
        fake.agents_chat_id,
        55,
    )


async def test_answer_callback_stops_the_spinner_and_tolerates_errors(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.answer_callback("777")
    fake.fail("answerCallbackQuery", 400, description="Bad Request: query is too old")
    await channel.answer_callback("778")
    assert [a["callback_query_id"] for a in fake.answered_callbacks] == ["777"]


# ---- the agents' forum ------------------------------------------------------------------------


async def test_topic_lifecycle(channel: TelegramChannel, fake: FakeTelegram) -> None:
    first = await channel.create_topic("Ana Ruiz · telegram")
    second = await channel.create_topic("x" * 300)
    assert second > first
    assert len(fake.topics[second].name) == 128
    await channel.close_topic(first)
    await channel.close_topic(first)  # TOPIC_NOT_MODIFIED tolerated
    assert fake.topics[first].closed
    await channel.reopen_topic(first)
    await channel.reopen_topic(first)
    assert not fake.topics[first].closed


async def test_unknown_topic_is_a_delivery_error(channel: TelegramChannel) -> None:
    with pytest.raises(DeliveryError, match="TOPIC_ID_INVALID"):
        await channel.close_topic(9999)


async def test_post_and_copy_between_topic_and_customer(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    thread = await channel.create_topic("Ana Ruiz")
    card_id = await channel.post_to_topic(thread, "Cliente: Ana\n" + "historial " * 900)
    await channel.copy_to_topic(thread, CHAT, 12)
    await channel.copy_from_topic(str(CHAT), 34)
    posted = fake.sent(fake.agents_chat_id)
    assert posted[0].message_id == card_id
    assert [m.method for m in posted] == ["sendMessage"] * 3 + ["copyMessage"]
    assert all(m.message_thread_id == thread for m in posted)
    assert (posted[3].from_chat_id, posted[3].source_message_id) == (CHAT, 12)
    [copy_out] = fake.sent(CHAT)
    assert (copy_out.from_chat_id, copy_out.source_message_id) == (fake.agents_chat_id, 34)


async def test_forum_needs_an_agents_chat(bot: Bot) -> None:
    channel = TelegramChannel(bot)
    with pytest.raises(DeliveryError, match="TELEGRAM_AGENTS_CHAT_ID"):
        await channel.create_topic("Ana")


# ---- polling and webhook dispatch -------------------------------------------------------------


class Sinks:
    """Records what the channel hands to the runtime."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.events: list[Inbound | AgentMessage] = []
        self.done = asyncio.Event()

    async def inbound(self, event: Inbound) -> None:
        self._add(event)

    async def agent(self, event: AgentMessage) -> None:
        self._add(event)

    def _add(self, event: Inbound | AgentMessage) -> None:
        self.events.append(event)
        if len(self.events) >= self.want:
            self.done.set()


async def test_polling_delivers_updates_in_order_and_stops_cleanly(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=4)
    polling = TelegramPolling(channel, on_inbound=sinks.inbound, on_agent=sinks.agent, timeout=5)
    fake.user_text(CHAT, "/start")
    fake.user_text(CHAT, "1")
    group_chat = {"id": -5, "type": "group", "title": "g"}
    fake.push_update({"message": private_message(text="x", chat=group_chat)})
    press = fake.user_press(CHAT, "abcd.svc:1", 3)
    await polling.start()
    fake.agent_text(101, "Hola, soy Luis")  # arrives while a long poll is parked
    async with asyncio.timeout(5):
        await sinks.done.wait()
    await polling.stop()
    texts = [e.text if isinstance(e, Inbound) and e.kind is Kind.TEXT else e for e in sinks.events]
    assert texts[:2] == ["/start", "1"]
    button = sinks.events[2]
    assert isinstance(button, Inbound)
    assert button.payload == "svc:1"
    agent = sinks.events[3]
    assert isinstance(agent, AgentMessage)
    assert agent.text == "Hola, soy Luis"
    # The press was answered so the customer's spinner stops.
    assert [a["callback_query_id"] for a in fake.answered_callbacks] == [
        press["callback_query"]["id"]
    ]
    assert fake.pending_updates == 0  # everything handled was confirmed
    assert fake.calls_to("getUpdates")[0].params["allowed_updates"] == [
        "message",
        "callback_query",
    ]


async def test_polling_confirms_a_batch_only_once_its_updates_have_their_place(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    """Telegram forgets what the next getUpdates confirms: a process killed after that must
    already have each update in its store. The runtime says so through ``placing``'s callback."""
    release = asyncio.Event()
    both = asyncio.Event()
    seen: list[str] = []

    async def placing(event: Inbound, placed: Callable[[], None]) -> None:
        seen.append(event.text)
        if len(seen) == 2:
            both.set()
        await release.wait()  # (the store is slow to answer)
        placed()

    async def unused(event: Inbound) -> None:
        pytest.fail("the plain sink is not used when placing is given")

    polling = TelegramPolling(channel, on_inbound=unused, placing=placing, timeout=5)
    fake.user_text(CHAT, "hola")
    fake.user_text(CHAT, "sigo aquí")
    await polling.start()
    await fake.wait_for_calls("getUpdates", 1)
    await asyncio.wait_for(both.wait(), timeout=5)
    await asyncio.sleep(0.2)
    assert len(fake.calls_to("getUpdates")) == 1  # not confirmed while not placed
    assert fake.pending_updates == 2
    release.set()
    await fake.wait_until_consumed()
    await polling.stop()
    assert seen == ["hola", "sigo aquí"]


async def test_polling_fetches_again_what_could_not_take_its_place(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    """The store unreachable for a message's first two tries: it is not confirmed to Telegram,
    so it comes again and is handled; one that never gets a place is dropped after a few
    tries (logged) instead of blocking the bot."""
    tries: dict[str, int] = {}
    handled: list[str] = []
    done = asyncio.Event()

    async def placing(event: Inbound, placed: Callable[[], None]) -> None:
        if event.text in handled:  # fetched again with one before it: a repeat (the dedupe)
            placed()
            return
        tries[event.text] = tries.get(event.text, 0) + 1
        if event.text == "nunca" or tries[event.text] <= 2:
            raise RuntimeError("session store unavailable")
        placed()
        handled.append(event.text)
        if event.text == "después":
            done.set()

    async def unused(event: Inbound) -> None:
        pytest.fail("the plain sink is not used when placing is given")

    polling = TelegramPolling(
        channel, on_inbound=unused, placing=placing, timeout=1, place_timeout=1
    )
    fake.user_text(CHAT, "hola")
    fake.user_text(CHAT, "nunca")
    fake.user_text(CHAT, "después")
    await polling.start()
    await asyncio.wait_for(done.wait(), timeout=10)
    await fake.wait_until_consumed()
    await polling.stop()
    assert handled == ["hola", "después"]
    assert tries["hola"] == 3
    assert tries["nunca"] == 1 + MAX_FETCHES_UNPLACED  # then dropped, not fetched forever


async def test_polling_survives_a_failing_handler_and_a_server_error(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def sink(event: Inbound) -> None:
        seen.append(event.text)
        if event.text == "boom":
            raise RuntimeError("handler bug")
        done.set()

    fake.fail("getUpdates", error_code=500)
    polling = TelegramPolling(channel, on_inbound=sink, timeout=5, retry_backoff=0.01)
    fake.user_text(CHAT, "boom")
    fake.user_text(CHAT, "sigo aquí")
    await polling.start()
    async with asyncio.timeout(5):
        await done.wait()
    await polling.stop()
    assert seen == ["boom", "sigo aquí"]
    assert polling.handler_errors == 1


async def test_webhook_body_is_dispatched_and_garbage_refused(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    await handle_update(fake.user_text(CHAT, "hola"), channel, sinks.inbound, sinks.agent)
    [event] = sinks.events
    assert isinstance(event, Inbound)
    assert event.text == "hola"
    with pytest.raises(BadUpdate):
        await handle_update({"message": "nope"}, channel, sinks.inbound, sinks.agent)


async def test_polling_stops_promptly_while_a_long_poll_is_parked(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    polling = TelegramPolling(channel, on_inbound=sinks.inbound, timeout=30)
    await polling.start()
    await fake.wait_for_calls("getUpdates", 1)
    async with asyncio.timeout(3):  # far below the 30 s long-poll timeout
        await polling.stop()
    assert sinks.events == []


async def test_refused_reply_is_counted(channel: TelegramChannel) -> None:
    with pytest.raises(DeliveryError):
        await channel.send(Outbound(KEY, "x", (Option("doc:10234567", "Ana"),)))
    assert channel.failed_deliveries == 1


# ---- the fake's control routes (used by the end-to-end suite) --------------------------------


async def test_fake_control_routes_drive_a_subprocess_fake(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "hola"))
    async with aiohttp.ClientSession(fake.base_url) as http:
        pushed = await http.post("/_fake/user_text", json={"chat_id": CHAT, "text": "menu"})
        assert pushed.status == 200
        sent = await (await http.get(f"/_fake/sent/{CHAT}")).json()
        waited = await http.get(f"/_fake/wait/{CHAT}", params={"n": "2", "timeout": "0.05"})
        assert waited.status == 408
        unknown = await http.post("/_fake/__init__", json={})
        assert unknown.status == 404
    assert [m["text"] for m in sent] == ["hola"]
    updates = await channel.bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["menu"]


@pytest.mark.parametrize(
    "out",
    [
        pytest.param(Outbound(KEY, "", media=Media("photo", "55")), id="no-source"),
        pytest.param(
            Outbound(KEY, "", media=Media("photo", "wamid.X"), source_key=KEY), id="bad-ref"
        ),
        pytest.param(Outbound(ConvKey("whatsapp", "573001112233"), "hola"), id="other-channel"),
    ],
)
async def test_undeliverable_replies_are_refused_and_counted(
    channel: TelegramChannel, fake: FakeTelegram, out: Outbound
) -> None:
    with pytest.raises(DeliveryError):
        await channel.send(out)
    assert channel.failed_deliveries == 1
    assert fake.messages == []


# ---- the lean sending path (JSON over the channel's own session) -------------------------------


async def test_a_reply_with_buttons_goes_as_one_json_body(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = (Option("pay", "Pagar"), Option("agent", "Hablar con un agente"))
    await channel.send(Outbound(KEY, "¿Qué desea?", options=options))
    [call] = fake.calls_to("sendMessage")
    assert call.content_type == "application/json"
    markup = call.params.pop("reply_markup")
    assert call.params == {"chat_id": CHAT, "text": "¿Qué desea?"}  # no parse mode: plain text
    rows = markup["inline_keyboard"]
    assert [[b["text"] for b in row] for row in rows] == [["Pagar"], ["Hablar con un agente"]]
    data = [b["callback_data"] for row in rows for b in row]
    assert [decode_callback_data(d) for d in data] == ["pay", "agent"]


async def test_a_callback_answer_goes_as_json(channel: TelegramChannel, fake: FakeTelegram) -> None:
    await channel.answer_callback("4242")
    [call] = fake.calls_to("answerCallbackQuery")
    assert call.content_type == "application/json"
    assert call.params == {"callback_query_id": "4242"}


async def test_a_topic_post_returns_the_new_message_id(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    thread = await channel.create_topic("Ana")
    first = await channel.post_to_topic(thread, "uno")
    second = await channel.post_to_topic(thread, "dos")
    sent = fake.sent(fake.agents_chat_id)
    assert [first, second] == [m.message_id for m in sent]
    assert {m.message_thread_id for m in sent} == {thread}


async def test_lean_429_waits_the_retry_after_telegram_gave(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", error_code=429, retry_after=1)
    await channel.send(Outbound(KEY, "hola"))
    failed, ok = fake.calls_to("sendMessage")
    assert (failed.error_code, ok.error_code) == (429, None)
    assert ok.at - failed.at >= 0.95  # retry_after, not the 10 ms test backoff
    assert [m.text for m in fake.sent(CHAT)] == ["hola"]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, {"parameters": {"retry_after": 7}}, TelegramRetryAfter),
        (400, {}, TelegramBadRequest),
        (403, {}, TelegramForbiddenError),
        (404, {}, TelegramNotFound),
        (413, {}, TelegramEntityTooLarge),
        (500, {}, TelegramServerError),
        (502, {}, TelegramServerError),
        (418, {}, TelegramAPIError),
    ],
)
def test_bot_api_errors_map_onto_aiograms_exceptions(
    status: int, body: dict[str, Any], kind: type[TelegramAPIError]
) -> None:
    reply = {"ok": False, "error_code": status, "description": "x", **body}
    err = api_error("sendMessage", {"chat_id": CHAT, "text": "hola"}, status, reply)
    assert type(err) is kind
    if isinstance(err, TelegramRetryAfter):
        assert err.retry_after == 7
        assert str(CHAT) in str(err)


@pytest.mark.parametrize("status", [400, 403])
async def test_lean_client_errors_are_not_retried(
    channel: TelegramChannel, fake: FakeTelegram, status: int
) -> None:
    fake.fail("sendMessage", error_code=status, count=None)
    with pytest.raises(DeliveryError):
        await channel.send(Outbound(KEY, "hola"))
    assert len(fake.calls_to("sendMessage")) == 1


async def test_a_description_echoing_the_token_is_scrubbed(
    channel: TelegramChannel, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", error_code=400, description=f"Bad Request: bot{fake.token} no")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="<token>") as info:
        await channel.send(Outbound(KEY, "hola"))
    assert fake.token not in str(info.value)
    assert fake.token not in repr(info.value.__cause__)
    assert fake.token not in caplog.text


async def test_an_unreachable_api_is_retried_then_fails_without_the_token(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens here once the socket closes
    bot = make_bot(SecretStr(fake.token), f"http://127.0.0.1:{port}")
    channel = TelegramChannel(bot, per_chat_interval=0, global_rate=0, max_retries=2)
    channel.retry_backoff = 0.01
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        await channel.send(Outbound(KEY, "hola"))
    await channel.aclose()
    await bot.session.close()
    retries = [r for r in caplog.records if r.getMessage() == "telegram send retry"]
    assert [getattr(r, "reason", None) for r in retries] == ["TelegramNetworkError"] * 2
    assert fake.token not in str(info.value)
    assert fake.token not in caplog.text


async def test_the_session_is_made_again_after_close(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "uno"))
    await channel.aclose()
    await channel.send(Outbound(KEY, "dos"))
    assert [m.text for m in fake.sent(CHAT)] == ["uno", "dos"]
