"""Telegram updates in: one parser for the webhook and long polling.

A customer's event in a private chat becomes an ``Inbound``; an agent's message in a forum topic
of the agents' group an ``AgentMessage``. The two updates customers send most (a text, a button
press) are read straight off the JSON (``quick_update``), skipping aiogram's pydantic models;
anything else goes through aiogram's ``Update``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.types import CallbackQuery, Message, Update, User
from pydantic import ValidationError

from bot.channels.base import AgentMessage
from bot.channels.telegram.content import unreadable_media
from flows.types import ConvKey, Inbound, Kind, Media

MAX_CALLBACK_DATA = 64
TOKEN_LEN = 4
SEP = "."
LONG_DIGITS = re.compile(r"\d{7,}")
_MEDIA_TYPES = (
    "photo",
    "sticker",
    "voice",
    "audio",
    "video",
    "video_note",
    "animation",  # before document: an animation message carries a document too
    "document",
    "location",
)
ALLOWED_UPDATES = ("message", "callback_query")


class BadUpdate(ValueError):
    """An update body that is not a Telegram Update (the webhook answers 400)."""


def _full_name(user: User | None) -> str | None:
    if user is None:
        return None
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return name or None


def decode_callback_data(data: str | None) -> str | None:
    """The option id inside callback data made by ``encode_callback_data``, else None."""
    if not data:
        return None
    token, sep, option_id = data.partition(SEP)
    if not sep or len(token) != TOKEN_LEN or not option_id:
        return None
    return option_id


def _callback_to_inbound(update_id: int, query: CallbackQuery) -> Inbound | None:
    message = query.message
    if message is not None and message.chat.type != "private":
        return None
    # In a private chat the chat id is the user's id, even when the message is inaccessible.
    chat_id = message.chat.id if message is not None else query.from_user.id
    option_id = decode_callback_data(query.data)
    return Inbound(
        key=ConvKey("telegram", str(chat_id)),
        event_id=str(update_id),
        kind=Kind.BUTTON if option_id is not None else Kind.OTHER,
        payload=option_id,
        user_id=str(query.from_user.id),
        display_name=_full_name(query.from_user),
    )


def _media_of(message: Message) -> Media | None:
    for kind in _MEDIA_TYPES:
        if getattr(message, kind, None) is not None:
            return Media(type=kind, ref=str(message.message_id), caption=message.caption or "")
    return None


def _file_id_of(message: Message) -> str:
    """The file id of an attachment another channel can be sent a copy of, else empty: a photo
    (its largest size), GIF, video, round video, voice note, audio, document or still sticker
    (animated and video stickers have no WhatsApp equivalent)."""
    if message.photo:
        return message.photo[-1].file_id
    if message.sticker is not None:
        still = not (message.sticker.is_animated or message.sticker.is_video)
        return message.sticker.file_id if still else ""
    # An animation message carries a document too: the animation is what was sent.
    for item in (
        message.animation,
        message.video,
        message.video_note,
        message.voice,
        message.audio,
        message.document,
    ):
        if item is not None:
            return item.file_id
    return ""


def update_to_inbound(update: Update) -> Inbound | None:
    """A customer's event in a private chat as an Inbound; None for anything else."""
    if update.callback_query is not None:
        return _callback_to_inbound(update.update_id, update.callback_query)
    message = update.message
    if message is None or message.chat.type != "private":
        return None  # edited messages, channel posts, groups: not a customer conversation
    user = message.from_user
    common: dict[str, Any] = {
        "key": ConvKey("telegram", str(message.chat.id)),
        "event_id": str(update.update_id),
        "user_id": str(user.id) if user is not None else None,
        "display_name": _full_name(user),
    }
    if message.text is not None:
        return Inbound(kind=Kind.TEXT, text=message.text, **common)
    contact = message.contact
    if contact is not None:
        if user is not None and contact.user_id == user.id:
            return Inbound(kind=Kind.CONTACT, phone=contact.phone_number, **common)
        # Someone else's card proves nothing about the sender: treat it as an unreadable
        # attachment (forwarded to agents during a handoff), never as the customer's phone.
        card = Media(type="contact", ref=str(message.message_id))
        return Inbound(kind=Kind.MEDIA, media=card, **common)
    media = _media_of(message)
    if media is not None:
        return Inbound(kind=Kind.MEDIA, media=media, text=media.caption, **common)
    if any(getattr(message, f, None) is not None for f in ("dice", "poll", "venue", "game")):
        return Inbound(kind=Kind.OTHER, **common)
    # A story, a checklist, a type newer than aiogram: unreadable media, never silence.
    other = unreadable_media(message)
    if other is not None:
        return Inbound(kind=Kind.MEDIA, media=other, text=other.caption, **common)
    return None  # service messages (pins, write access, ...) need no answer


@dataclass(frozen=True)
class QuickUpdate:
    """A customer's text or button press read straight off a webhook body (no aiogram model)."""

    update_id: int
    inbound: Inbound
    callback_query_id: str | None = None  # set for a button press: it must be answered


def as_int(value: object) -> int | None:
    # ``bool`` is an int in Python, never an id on the wire.
    return value if type(value) is int else None


def _quick_user(raw: object) -> tuple[str, str | None] | None:
    """(user id, display name) of a well-formed ``User`` dict, else None."""
    if not isinstance(raw, dict):
        return None
    user_id, first, last = as_int(raw.get("id")), raw.get("first_name"), raw.get("last_name")
    if user_id is None or not isinstance(first, str) or not isinstance(last, str | None):
        return None
    name = " ".join(part for part in (first, last) if part)
    return str(user_id), name or None


def _quick_private_chat(message: object) -> str | None:
    if not isinstance(message, dict):
        return None
    chat = message.get("chat")
    if not isinstance(chat, dict) or chat.get("type") != "private":
        return None
    chat_id = as_int(chat.get("id"))
    return None if chat_id is None else str(chat_id)


def quick_update(raw: dict[str, Any]) -> QuickUpdate | None:
    """The two updates a customer sends most (a text in a private chat, a button press in one)
    as what ``update_to_inbound`` makes of them, without building aiogram's pydantic Update
    (its validation cost more than the rest of the webhook call). None for anything else,
    which takes the aiogram path.
    """
    update_id = as_int(raw.get("update_id"))
    if update_id is None or len(raw) != 2:
        return None
    message = raw.get("message")
    if message is not None:
        chat_id = _quick_private_chat(message)
        text = message.get("text") if isinstance(message, dict) else None
        user = _quick_user(message.get("from")) if isinstance(message, dict) else None
        if chat_id is None or not isinstance(text, str) or user is None:
            return None
        if as_int(message.get("message_id")) is None or as_int(message.get("date")) is None:
            return None
        inbound = Inbound(
            key=ConvKey("telegram", chat_id),
            event_id=str(update_id),
            kind=Kind.TEXT,
            text=text,
            user_id=user[0],
            display_name=user[1],
        )
        return QuickUpdate(update_id, inbound)
    query = raw.get("callback_query")
    if not isinstance(query, dict):
        return None
    query_id, data = query.get("id"), query.get("data")
    user = _quick_user(query.get("from"))
    chat_id = _quick_private_chat(query.get("message"))
    if not isinstance(query_id, str) or not isinstance(data, str | None):
        return None
    if user is None or chat_id is None or not isinstance(query.get("chat_instance"), str):
        return None
    option_id = decode_callback_data(data)
    inbound = Inbound(
        key=ConvKey("telegram", chat_id),
        event_id=str(update_id),
        kind=Kind.BUTTON if option_id is not None else Kind.OTHER,
        payload=option_id,
        user_id=user[0],
        display_name=user[1],
    )
    return QuickUpdate(update_id, inbound, callback_query_id=query_id)


def update_to_agent_message(update: Update, agents_chat_id: int) -> AgentMessage | None:
    """An agent's message in a forum topic of the agents' supergroup, else None."""
    message = update.message
    if message is None or message.chat.id != agents_chat_id:
        return None
    if not message.is_topic_message or not message.message_thread_id:
        return None  # the General topic and replies outside topics belong to no customer
    user = message.from_user
    anonymous_admin = message.sender_chat is not None and message.sender_chat.id == agents_chat_id
    if anonymous_admin:
        # An admin posting as the group shows up as a bot user; it is still a person.
        agent_name = message.author_signature or "Agente"
        first_name = (message.author_signature or "").partition(" ")[0]
    elif user is None or user.is_bot:
        return None  # never relay bots, ourselves included (our cards and copies)
    else:
        agent_name = _full_name(user) or "Agente"
        first_name = user.first_name or ""
    media = _media_of(message)
    file_id = _file_id_of(message)
    if media is not None and file_id:
        # Kept so the file can be fetched for a channel a Telegram copy cannot reach (WhatsApp).
        media = dataclasses.replace(media, file_id=file_id)
    text = message.text or message.caption or ""
    if not text and media is None:
        return None  # topic service messages (closed, reopened, renamed)
    return AgentMessage(
        thread_id=message.message_thread_id,
        message_id=message.message_id,
        text=text,
        agent_name=agent_name,
        media=media,
        user_id=None if anonymous_admin or user is None else user.id,
        first_name=first_name.strip(),
    )


def callback_query_id(update: Update | QuickUpdate) -> str | None:
    """The id of the button press an update carries, else None."""
    if isinstance(update, QuickUpdate):
        return update.callback_query_id
    return update.callback_query.id if update.callback_query is not None else None


def parse_update(update_json: dict[str, Any], bot: Bot) -> Update | QuickUpdate:
    """An update's JSON (a webhook body, or one of getUpdates' results) as an Update bound to
    ``bot`` (a customer's text or button press as a ``QuickUpdate``); BadUpdate when it is not
    one."""
    quick = quick_update(update_json)
    if quick is not None:
        return quick
    try:
        return Update.model_validate(update_json, context={"bot": bot})
    except ValidationError as err:
        msg = f"not a Telegram update ({err.error_count()} problems)"
        raise BadUpdate(msg) from err
