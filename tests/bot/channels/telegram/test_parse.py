"""Telegram updates in: customers' events and agents' topic messages, both parser paths."""

from __future__ import annotations

from typing import Any

import pytest
from aiogram.types import Update
from fixtures import fixture
from telegram_api import FakeTelegram

from bot.channels.base import AgentMessage
from bot.channels.telegram.parse import (
    quick_update,
    update_to_agent_message,
    update_to_inbound,
)
from flows.types import ConvKey, Inbound, Kind, Media

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


def test_agent_topic_message_is_accepted_from_the_agents_chat(fake: FakeTelegram) -> None:
    raw = fake.agent_text(101, "Hola, soy Luis", from_id=5001)
    message = update_to_agent_message(as_update(raw), fake.agents_chat_id)
    assert message == AgentMessage(
        thread_id=101,
        message_id=raw["message"]["message_id"],
        text="Hola, soy Luis",
        agent_name="Luis",
        user_id=5001,
        first_name="Luis",
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
