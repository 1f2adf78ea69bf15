"""The Telegram channel: aiogram updates in, Outbound replies out, and the agents' forum topics.

Sending, in one picture::

    send(out) ──> per-chat lane (FIFO lock: one reply at a time, in call order)
                     └─> for each part: chat bucket ─> global bucket ─> Bot API call
                                             429: sleep retry_after, try again
                                             network / 5xx: jittered backoff, try again
                                             403, 400, 404 ...: DeliveryError at once
                                             after max_retries: DeliveryError

Pacing uses token buckets rather than a fixed gap: Telegram's documented limits (about one message
a second per private chat, 20 a minute per group, 30 a second overall) are averages, and a fixed
one-second gap would make a three-message reply take three seconds. A bucket of three lets a
normal reply go out at once and only slows a chat that keeps sending; a 429 that still happens is
honoured with its ``retry_after``.

The hot calls (``sendMessage``, ``answerCallbackQuery``) skip aiogram's client: one JSON POST on
the channel's own aiohttp session, the reply read as a plain dict, and Telegram's error shape
mapped onto the same aiogram exceptions its client raises, so the retries above treat both paths
alike. aiogram's pydantic method objects, form bodies and response models cost more CPU than the
rest of a message's handling; everything else (topics, copies, files, updates) still uses aiogram.

Messages are plain text (parse mode None), so customer or WispHub text is never parsed as HTML.
Button callback data is ``<token>.<option id>``: a 4-character token per message, then the
option id; it is checked to fit Telegram's 64 bytes and to carry no long digit run (a document
or phone number must never travel in callback data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import mimetypes
import random
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import certifi
import orjson
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    RestartingTelegram,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import AnswerCallbackQuery, SendMessage, TelegramMethod
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    Message,
    Update,
    User,
)
from pydantic import SecretStr, ValidationError
from yarl import URL

from bot.channels.base import (
    AgentMessage,
    AgentSink,
    DeliveryError,
    InboundSink,
    PlacingSink,
    placed_within,
    settle,
    settle_when_done,
)
from bot.channels.telegram_content import unreadable_media
from flows.types import Channel, ConvKey, Inbound, Kind, Media, Option, Outbound

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_TOPIC_NAME = 128
_TOKEN_LEN = 4
_SEP = "."
_LONG_DIGITS = re.compile(r"\d{7,}")
_SHORT_LABEL = 16  # labels up to this long sit two to a row
_BURST = 3.0  # messages a chat may send at once before pacing starts
_MAX_IDLE_LANES = 1024
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
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024  # Bot API: larger photos must go as documents
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Bot API: the largest file a bot may upload
_PHOTO_MIMES = frozenset({"image/jpeg", "image/png"})


class BadUpdate(ValueError):
    """An update body that is not a Telegram Update (the webhook answers 400)."""


def make_bot(token: SecretStr, api_url: str) -> Bot:
    """An aiogram Bot speaking plain text to the Bot API at ``api_url``."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    return Bot(
        token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=None),
    )


# ---- updates in -------------------------------------------------------------------------------


def _full_name(user: User | None) -> str | None:
    if user is None:
        return None
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return name or None


def encode_callback_data(token: str, option_id: str) -> str:
    """``token.option_id``, refused (DeliveryError) when too long or carrying a number."""
    data = f"{token}{_SEP}{option_id}"
    if not option_id or len(data.encode()) > MAX_CALLBACK_DATA:
        msg = f"option id {option_id[:20]!r}… does not fit Telegram's 64-byte callback data"
        raise DeliveryError(msg)
    if _LONG_DIGITS.search(option_id):
        # The check exists to keep personal numbers out of Telegram; so never echo the id.
        msg = "option id carries a run of 7+ digits (personal data must not be callback data)"
        raise DeliveryError(msg)
    return data


def decode_callback_data(data: str | None) -> str | None:
    """The option id inside callback data made by ``encode_callback_data``, else None."""
    if not data:
        return None
    token, sep, option_id = data.partition(_SEP)
    if not sep or len(token) != _TOKEN_LEN or not option_id:
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


def _int(value: object) -> int | None:
    # ``bool`` is an int in Python, never an id on the wire.
    return value if type(value) is int else None


def _quick_user(raw: object) -> tuple[str, str | None] | None:
    """(user id, display name) of a well-formed ``User`` dict, else None."""
    if not isinstance(raw, dict):
        return None
    user_id, first, last = _int(raw.get("id")), raw.get("first_name"), raw.get("last_name")
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
    chat_id = _int(chat.get("id"))
    return None if chat_id is None else str(chat_id)


def quick_update(raw: dict[str, Any]) -> QuickUpdate | None:
    """The two updates a customer sends most (a text in a private chat, a button press in one)
    as what ``update_to_inbound`` makes of them, without building aiogram's pydantic Update
    (its validation cost more than the rest of the webhook call). None for anything else,
    which takes the aiogram path.
    """
    update_id = _int(raw.get("update_id"))
    if update_id is None or len(raw) != 2:
        return None
    message = raw.get("message")
    if message is not None:
        chat_id = _quick_private_chat(message)
        text = message.get("text") if isinstance(message, dict) else None
        user = _quick_user(message.get("from")) if isinstance(message, dict) else None
        if chat_id is None or not isinstance(text, str) or user is None:
            return None
        if _int(message.get("message_id")) is None or _int(message.get("date")) is None:
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
    elif user is None or user.is_bot:
        return None  # never relay bots, ourselves included (our cards and copies)
    else:
        agent_name = _full_name(user) or "Agente"
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
    )


# ---- replies out ------------------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Cut text into parts of at most ``limit`` characters, at a line or space when possible."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = max(cut, window.rfind(" "))
        if cut < limit // 2:
            cut = limit  # one long word: cut it hard rather than send tiny parts
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    if rest.strip() or not parts:
        parts.append(rest)
    return [p for p in parts if p.strip()] or [text[:limit]]


def build_keyboard(options: Iterable[Option], token: str) -> dict[str, Any]:
    """An ``InlineKeyboardMarkup`` as the Bot API's JSON: one button a row, two when every
    label is short; callback data is ``token.option_id``."""
    opts = list(options)
    for opt in opts:
        if not opt.label.strip():
            msg = f"option {opt.id!r} has an empty label"
            raise DeliveryError(msg)
    buttons = [{"text": o.label, "callback_data": encode_callback_data(token, o.id)} for o in opts]
    width = 2 if all(len(o.label) <= _SHORT_LABEL for o in opts) else 1
    rows = [buttons[i : i + width] for i in range(0, len(buttons), width)]
    return {"inline_keyboard": rows}


# ---- the lean Bot API path --------------------------------------------------------------------

# Only built when a call fails: aiogram's exceptions want the method, and their text names it.
_STAND_INS: dict[str, type[TelegramMethod[Any]]] = {
    "sendMessage": SendMessage,
    "answerCallbackQuery": AnswerCallbackQuery,
}
_BY_STATUS: dict[int, type[TelegramAPIError]] = {
    400: TelegramBadRequest,
    401: TelegramUnauthorizedError,
    403: TelegramForbiddenError,
    404: TelegramNotFound,
    409: TelegramConflictError,
    413: TelegramEntityTooLarge,
}


def _stand_in(method: str, payload: dict[str, Any]) -> TelegramMethod[Any]:
    # model_construct skips validation: this object only names the call in the error.
    return _STAND_INS[method].model_construct(**payload)


def _lean_session(timeout: float) -> aiohttp.ClientSession:
    # The connector aiogram's AiohttpSession uses: certifi's CAs (slim images may lack the
    # system's), its connection limit and its long DNS cache.
    connector = aiohttp.TCPConnector(
        ssl=ssl.create_default_context(cafile=certifi.where()), limit=100, ttl_dns_cache=3600
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        json_serialize=_json_text,
    )


def _json_text(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def api_error(
    method: str, payload: dict[str, Any], status: int, body: dict[str, Any]
) -> TelegramAPIError:
    """The exception aiogram's client raises for this Bot API error reply (``check_response``)."""
    call = _stand_in(method, payload)
    description = str(body.get("description") or f"HTTP {status}")
    parameters = body.get("parameters")
    if isinstance(parameters, dict):
        retry_after = _int(parameters.get("retry_after"))
        if retry_after:
            return TelegramRetryAfter(method=call, message=description, retry_after=retry_after)
        migrate_to = _int(parameters.get("migrate_to_chat_id"))
        if migrate_to:
            return TelegramMigrateToChat(
                method=call, message=description, migrate_to_chat_id=migrate_to
            )
    kind = _BY_STATUS.get(status)
    if kind is not None:
        return kind(method=call, message=description)
    if status >= 500:
        if "restart" in description:
            return RestartingTelegram(method=call, message=description)
        return TelegramServerError(method=call, message=description)
    return TelegramAPIError(method=call, message=description)


class TokenBucket:
    """Up to ``burst`` calls at once, then ``rate`` a second; rate <= 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()  # waiters take their turn in order

    async def take(self) -> None:
        """Wait until one call may go out."""
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    @property
    def idle(self) -> bool:
        """True when the bucket is full again (it can be forgotten)."""
        elapsed = time.monotonic() - self._stamp
        return self.rate <= 0 or self._tokens + elapsed * self.rate >= self.burst


@dataclass
class _Lane:
    """One chat's FIFO lock and pacing bucket; dropped when nobody uses it and it is full."""

    lock: asyncio.Lock
    bucket: TokenBucket
    users: int = 0


def _chat_id(value: str | int) -> int | str:
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return value  # @channel usernames


async def _unless_unchanged(call: Awaitable[bool]) -> bool:
    """A topic already in the wanted state is success, not an error."""
    try:
        return await call
    except TelegramBadRequest as err:
        if "TOPIC_NOT_MODIFIED" in err.message:
            return True
        raise


class TelegramChannel:
    """Telegram replies and the agents' forum, with order, pacing and retries (ChannelAdapter)."""

    name: Channel = "telegram"

    def __init__(
        self,
        bot: Bot,
        *,
        agents_chat_id: int | None = None,
        per_chat_interval: float = 1.0,
        global_rate: float = 30.0,
        group_per_minute: int = 20,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
    ) -> None:
        self.bot = bot
        self.agents_chat_id = agents_chat_id
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.failed_deliveries = 0
        # Hears of each Bot API call: True when Telegram answered, False when the call failed
        # for the channel's sake (network, 5xx, an undecodable answer), for the readiness check.
        self.on_outcome: Callable[[bool], None] | None = None
        self._global = TokenBucket(global_rate, global_rate / 2)
        self._lanes: dict[int | str, _Lane] = {}
        self._http: aiohttp.ClientSession | None = None  # the lean path's, made on first use
        self._urls: dict[str, URL] = {}  # Bot API method -> its URL (the token is in it)

    async def aclose(self) -> None:
        """Close the lean path's HTTP session (aiogram's Bot session is closed by its owner)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- ChannelAdapter ---------------------------------------------------------------------

    async def send(self, out: Outbound) -> None:
        """Deliver one reply (text parts, keyboard on the last, then any media copy) in order."""
        chat = _chat_id(out.key.chat_id)
        if out.key.channel != "telegram":
            raise self._failed(chat, DeliveryError(f"not a Telegram conversation: {out.key}"), 0)
        # Render before sending anything: a bad option must not leave half a reply behind.
        try:
            markup = build_keyboard(out.options, secrets.token_urlsafe(3)) if out.options else None
        except DeliveryError as err:
            raise self._failed(chat, err, 0) from err
        copy: tuple[int | str, int] | None = None
        if out.media is not None:
            if out.source_key is None or not out.media.ref.isdigit():
                problem = DeliveryError("media needs a source chat and a message id to copy")
                raise self._failed(chat, problem, 0)
            copy = (_chat_id(out.source_key.chat_id), int(out.media.ref))
        parts = split_text(out.text) if out.text.strip() else []
        if markup is not None and not parts:
            parts = ["…"]  # Telegram needs some text to hang a keyboard on
        async with self._lane(chat):
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                send = functools.partial(
                    self.send_text, chat, part, reply_markup=markup if last else None
                )
                await self._call(chat, send)
            if copy is not None:
                source, ref = copy
                await self._call(
                    chat,
                    lambda: self.bot.copy_message(
                        chat_id=chat, from_chat_id=source, message_id=ref
                    ),
                )

    async def answer_callback(self, callback_query_id: str) -> None:
        """Stop the button's spinner; a stale or failed answer is only logged."""
        try:
            await self._post("answerCallbackQuery", {"callback_query_id": callback_query_id})
        except (TelegramAPIError, ClientDecodeError) as err:
            # "query is too old" and friends: the customer's press is still handled.
            log.info("callback answer failed: %s", self._scrub(str(err)))

    # ---- the agents' forum ------------------------------------------------------------------

    def _agents(self) -> int:
        if self.agents_chat_id is None:
            msg = "no agents chat configured (TELEGRAM_AGENTS_CHAT_ID)"
            raise DeliveryError(msg)
        return self.agents_chat_id

    async def create_topic(self, name: str) -> int:
        """Open a forum topic named ``name`` (cut to 128 characters); return its thread id."""
        chat = self._agents()
        title = " ".join(name.split())[:MAX_TOPIC_NAME] or "?"
        topic = await self._topic_call(
            lambda: self.bot.create_forum_topic(chat_id=chat, name=title)
        )
        return topic.message_thread_id

    async def _topic_call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A change to a topic (create, close, reopen): not a message, so it neither waits
        behind the group's paced posts nor counts against its 20 a minute (a customer's turn
        opens a topic while it holds the conversation's lock)."""
        lane_key = f"{self._agents()}/topics"
        async with self._lane(lane_key, paced=False):
            return await self._call(lane_key, make)

    async def close_topic(self, thread_id: int) -> None:
        """Close a topic; closing a closed one is fine."""
        chat = self._agents()
        await self._topic_call(
            lambda: _unless_unchanged(
                self.bot.close_forum_topic(chat_id=chat, message_thread_id=thread_id)
            )
        )

    async def reopen_topic(self, thread_id: int) -> None:
        """Reopen a topic; reopening an open one is fine."""
        chat = self._agents()
        await self._topic_call(
            lambda: _unless_unchanged(
                self.bot.reopen_forum_topic(chat_id=chat, message_thread_id=thread_id)
            )
        )

    async def post_to_topic(self, thread_id: int, text: str) -> int:
        """Post text in a topic (split when long); return the first part's message id."""
        chat = self._agents()
        first: int | None = None
        async with self._lane(chat):
            for part in split_text(text):
                send = functools.partial(self.send_text, chat, part, thread_id=thread_id)
                sent = await self._call(chat, send)
                first = sent if first is None else first
        assert first is not None  # split_text always yields a part
        return first

    async def copy_to_topic(self, thread_id: int, from_chat_id: int | str, message_id: int) -> None:
        """Copy a customer's message (an attachment) into their topic."""
        chat = self._agents()
        source = _chat_id(from_chat_id)
        async with self._lane(chat):
            await self._call(
                chat,
                lambda: self.bot.copy_message(
                    chat_id=chat,
                    from_chat_id=source,
                    message_id=message_id,
                    message_thread_id=thread_id,
                ),
            )

    async def send_file_to_topic(
        self, thread_id: int, data: bytes, mime: str, filename: str, caption: str = ""
    ) -> None:
        """Post a file that came from elsewhere (a WhatsApp customer's photo) in a topic.

        Images Telegram shows inline go as a photo, anything else (or a photo over Telegram's
        10 MB photo limit) as a document.
        """
        chat = self._agents()
        file = BufferedInputFile(data, filename=filename)
        text = caption[:MAX_CAPTION] or None
        send: Callable[[], Awaitable[Message]]
        if mime in _PHOTO_MIMES and len(data) <= MAX_PHOTO_BYTES:
            send = functools.partial(
                self.bot.send_photo,
                chat_id=chat,
                photo=file,
                caption=text,
                message_thread_id=thread_id,
            )
        else:
            send = functools.partial(
                self.bot.send_document,
                chat_id=chat,
                document=file,
                caption=text,
                message_thread_id=thread_id,
            )
        async with self._lane(chat):
            await self._call(chat, send)

    async def download_file(self, file_id: str) -> tuple[bytes, str]:
        """Download a file an agent posted (to send it on another channel): bytes and MIME type.

        The type is guessed from Telegram's file path (``photos/file_3.jpg``); the Bot API
        serves files up to 20 MB, a larger one fails here like any other download.
        """
        try:
            file = await self.bot.get_file(file_id)
            if not file.file_path:
                msg = "Telegram gave no path for the file"
                raise DeliveryError(msg)
            data = await self.bot.download_file(file.file_path)
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError) as err:
            # aiohttp errors quote the download URL, which carries the token: scrubbed.
            # A warning: the caller logs the undelivered reply and tells the agent.
            text = self._scrub(str(err))
            log.warning(
                "telegram file download failed",
                extra={"error": type(err).__name__, "detail": text},
            )
            msg = f"telegram file download failed: {type(err).__name__}: {text}"
            raise DeliveryError(msg) from err
        assert data is not None  # a BytesIO when no destination is given
        mime = mimetypes.guess_type(file.file_path)[0] or "application/octet-stream"
        return data.read(), mime

    async def copy_from_topic(self, chat_id: str, message_id: int) -> None:
        """Copy an agent's message (an attachment) from the agents' group to a customer."""
        source = self._agents()
        chat = _chat_id(chat_id)
        async with self._lane(chat):
            await self._call(
                chat,
                lambda: self.bot.copy_message(
                    chat_id=chat, from_chat_id=source, message_id=message_id
                ),
            )

    # ---- the lean Bot API path --------------------------------------------------------------

    async def send_text(
        self,
        chat: int | str,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        thread_id: int | None = None,
    ) -> int:
        """One ``sendMessage`` (plain text), no pacing or retries; the new message's id.

        Raises what aiogram's ``bot.send_message`` raises, so ``_call`` retries it the same way.
        """
        payload: dict[str, Any] = {"chat_id": chat, "text": text}
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        if thread_id is not None:
            payload["message_thread_id"] = thread_id
        result = await self._post("sendMessage", payload)
        message_id = _int(result.get("message_id")) if isinstance(result, dict) else None
        if message_id is None:
            msg = "Failed to deserialize object"
            problem = ValueError("sendMessage result has no message_id")
            raise ClientDecodeError(msg, problem, result)
        return message_id

    async def _post(self, method: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` as JSON to ``method``; its ``result``, else aiogram's exception."""
        session = self._http
        if session is None or session.closed:
            session = self._http = _lean_session(self.bot.session.timeout)
        url = self._urls.get(method)
        if url is None:  # parsed once per method, not on every call
            url = self._urls[method] = URL(self.bot.session.api.api_url(self.bot.token, method))
        try:
            async with session.post(url, json=payload) as response:
                status = response.status
                content = await response.read()
        except TimeoutError as err:
            raise TelegramNetworkError(
                method=_stand_in(method, payload), message="Request timeout error"
            ) from err
        except aiohttp.ClientError as err:
            # The error may quote the URL, which carries the token: scrubbed, and not chained.
            text = self._scrub(f"{type(err).__name__}: {err}")
            raise TelegramNetworkError(method=_stand_in(method, payload), message=text) from None
        try:
            body = orjson.loads(content)
        except ValueError as err:
            msg = "Failed to decode object"
            raise ClientDecodeError(msg, err, content[:200]) from err
        if not isinstance(body, dict):
            msg = "Failed to deserialize object"
            raise ClientDecodeError(msg, ValueError("not a JSON object"), content[:200])
        if 200 <= status <= 226 and body.get("ok") is True:
            return body.get("result")
        failure = api_error(method, payload, status, body)
        failure.message = self._scrub(failure.message)
        raise failure

    # ---- order, pacing, retries -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lane(self, chat: int | str, *, paced: bool = True) -> AsyncIterator[_Lane]:
        lane = self._lanes.get(chat)
        if lane is None:
            if len(self._lanes) >= _MAX_IDLE_LANES:
                self._sweep()
            group = isinstance(chat, str) or chat < 0
            if not paced:
                bucket = TokenBucket(0.0, _BURST)
            elif group:
                bucket = TokenBucket(self.group_per_minute / 60, _BURST)
            else:
                rate = 1 / self.per_chat_interval if self.per_chat_interval > 0 else 0.0
                bucket = TokenBucket(rate, _BURST)
            lane = self._lanes[chat] = _Lane(asyncio.Lock(), bucket)
        lane.users += 1
        try:
            # asyncio.Lock wakes waiters first-come first-served: replies keep their call order.
            async with lane.lock:
                yield lane
        finally:
            lane.users -= 1
            if lane.users == 0 and lane.bucket.idle:
                self._lanes.pop(chat, None)

    def _sweep(self) -> None:
        # Lanes left behind with a not-yet-full bucket are forgotten once they are full again.
        for chat, lane in list(self._lanes.items()):
            if lane.users == 0 and lane.bucket.idle:
                del self._lanes[chat]

    async def _call(
        self,
        chat: int | str,
        make: Callable[[], Awaitable[T]],
    ) -> T:
        """One Bot API call with pacing and retries; DeliveryError when it cannot succeed."""
        lane = self._lanes[chat]
        attempt = 0
        while True:
            await lane.bucket.take()
            await self._global.take()
            try:
                result = await make()
            except TelegramRetryAfter as err:
                delay = float(err.retry_after)
                reason = "flood control"
            except TelegramEntityTooLarge as err:
                raise self._failed(chat, err, attempt) from err
            except (TelegramNetworkError, TelegramServerError, ClientDecodeError) as err:
                if self.on_outcome is not None:
                    self.on_outcome(False)
                # Telegram may have delivered before the error reached us; a rare duplicate
                # beats a reply lost for good.
                delay = min(self.retry_backoff * 2**attempt, 30.0) * random.uniform(0.8, 1.2)
                reason = type(err).__name__
            except TelegramAPIError as err:
                raise self._failed(chat, err, attempt) from err
            else:
                if self.on_outcome is not None:
                    self.on_outcome(True)
                return result
            attempt += 1
            if attempt > self.max_retries:
                msg = f"gave up after {attempt} attempts ({reason})"
                raise self._failed(chat, DeliveryError(msg), attempt - 1)
            log.warning(
                "telegram send retry",
                extra={
                    "conv": f"telegram:{chat}",
                    "attempt": attempt,
                    "reason": reason,
                    "delay": delay,
                },
            )
            await asyncio.sleep(delay)

    def _failed(self, chat: int | str, err: Exception, attempt: int) -> DeliveryError:
        self.failed_deliveries += 1
        text = self._scrub(str(err))
        log.error(
            "telegram delivery failed",
            extra={"conv": f"telegram:{chat}", "error": type(err).__name__, "detail": text},
        )
        msg = f"telegram:{chat}: {type(err).__name__} after {attempt} retries: {text}"
        return DeliveryError(msg)

    def _scrub(self, text: str) -> str:
        # aiohttp errors can quote the request URL, which carries the token.
        return text.replace(self.bot.token, "<token>")


# ---- dispatch: shared by long polling and the webhook -----------------------------------------

CallbackSink = Callable[[str], Awaitable[None]]


MAX_FETCHES_UNPLACED = 3  # fetched again at most this many times while the store is unreachable


async def dispatch_update(
    update: Update | QuickUpdate,
    channel: TelegramChannel,
    on_inbound: InboundSink,
    on_agent: AgentSink | None,
    on_callback: CallbackSink | None = None,
    *,
    answered: bool = False,
) -> None:
    """Route one parsed update: answer a button press (unless ``answered``: the webhook's answer
    did), then hand the event to its sink."""
    answering: asyncio.Future[None] | None = None
    if isinstance(update, QuickUpdate):
        if update.callback_query_id is not None and not answered:
            answer = on_callback or channel.answer_callback
            answering = asyncio.ensure_future(answer(update.callback_query_id))
        try:
            await on_inbound(update.inbound)
        finally:
            if answering is not None:
                await answering
        return
    if update.callback_query is not None and not answered:
        # Answered alongside, not before: awaiting the answer first would let a later update of
        # the same customer reach the sink ahead of this press.
        answer = on_callback or channel.answer_callback
        answering = asyncio.ensure_future(answer(update.callback_query.id))
    try:
        inbound = update_to_inbound(update)
        if inbound is not None:
            await on_inbound(inbound)
        elif on_agent is not None and channel.agents_chat_id is not None:
            agent = update_to_agent_message(update, channel.agents_chat_id)
            if agent is not None:
                await on_agent(agent)
    finally:
        if answering is not None:
            await answering


def callback_query_id(update: Update | QuickUpdate) -> str | None:
    """The id of the button press an update carries, else None."""
    if isinstance(update, QuickUpdate):
        return update.callback_query_id
    return update.callback_query.id if update.callback_query is not None else None


def parse_update(update_json: dict[str, Any], channel: TelegramChannel) -> Update | QuickUpdate:
    """A webhook body as an Update bound to the channel's bot (a customer's text or button
    press as a ``QuickUpdate``); BadUpdate when it is not one."""
    quick = quick_update(update_json)
    if quick is not None:
        return quick
    try:
        return Update.model_validate(update_json, context={"bot": channel.bot})
    except ValidationError as err:
        msg = f"not a Telegram update ({err.error_count()} problems)"
        raise BadUpdate(msg) from err


async def handle_update(
    update_json: dict[str, Any],
    channel: TelegramChannel,
    on_inbound: InboundSink,
    on_agent: AgentSink | None,
) -> None:
    """Parse a webhook body into an Update and dispatch it; BadUpdate when it is not one."""
    await dispatch_update(parse_update(update_json, channel), channel, on_inbound, on_agent)


class TelegramPolling:
    """Long polling with aiogram's Bot: each update is handled as its own task, in order."""

    def __init__(
        self,
        channel: TelegramChannel,
        *,
        on_inbound: InboundSink,
        on_agent: AgentSink | None = None,
        on_callback: CallbackSink | None = None,
        placing: PlacingSink | None = None,
        timeout: int = 30,
        max_in_flight: int = 256,
        drain_timeout: float = 10.0,
        retry_backoff: float = 1.0,
        place_timeout: float = 5.0,
    ) -> None:
        self.channel = channel
        self.on_inbound = on_inbound
        # With ``placing`` (used instead of ``on_inbound``), a batch is confirmed to Telegram
        # (the next getUpdates) only once each of its updates has its place in the store.
        self.placing = placing
        self.place_timeout = place_timeout
        self.on_agent = on_agent
        self.on_callback = on_callback
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.retry_backoff = retry_backoff
        self.offset: int | None = None
        self.handler_errors = 0
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._fetched_again: dict[int, int] = {}  # update id -> times not placed
        self._stopping = False

    async def start(self) -> None:
        """Start polling in the background (returns at once)."""
        if self._loop_task is not None:
            return
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name="telegram-polling")

    async def stop(self) -> None:
        """Stop fetching, let in-flight updates finish (up to drain_timeout), confirm the offset."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("telegram updates cancelled at stop", extra={"count": len(pending)})
                # Let them keep their events (the inbox) while the store is still open.
                await asyncio.wait(pending, timeout=2)
        if self.offset is not None:
            # Confirm what was handled so a restart does not fetch it again.
            with contextlib.suppress(TelegramAPIError, ClientDecodeError, TimeoutError):
                async with asyncio.timeout(2):
                    await self.channel.bot.get_updates(offset=self.offset, limit=1, timeout=0)

    async def _run(self) -> None:
        bot = self.channel.bot
        failures = 0
        request_timeout = int(bot.session.timeout + self.timeout)
        while not self._stopping:
            try:
                updates = await bot.get_updates(
                    offset=self.offset,
                    timeout=self.timeout,
                    allowed_updates=list(ALLOWED_UPDATES),
                    request_timeout=request_timeout,
                )
            except TelegramUnauthorizedError:
                log.critical("telegram rejected the bot token; polling stopped")
                return
            except Exception as err:
                # Whatever went wrong (network, 5xx, 409 while a webhook is set, a bad body),
                # polling must outlive it; the backoff keeps a persistent fault from spinning.
                failures += 1
                delay = min(self.retry_backoff * 2 ** min(failures, 6), 60.0)
                log.warning(
                    "telegram getUpdates failed",
                    extra={"error": type(err).__name__, "delay": delay},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            batch: list[asyncio.Future[bool]] = []
            for update in updates:
                self.offset = update.update_id + 1
                await self._slots.acquire()
                placed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                batch.append(placed)
                # Tasks start in creation order, so each sink call begins in update order; the
                # engine's per-conversation queue keeps that order from there on.
                task = asyncio.create_task(self._handle(update, placed))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(functools.partial(settle_when_done, placed))
            if batch and self.placing is not None:
                await self._confirm_only_placed(updates, batch)

    async def _confirm_only_placed(
        self, updates: list[Update], batch: list[asyncio.Future[bool]]
    ) -> None:
        """The next getUpdates confirms this batch, after which Telegram never sends it again:
        first each update takes its place in the store (the journal of turns in flight), so a
        process killed from then on loses none of them. Updates that could not (the store
        unreachable) are left unconfirmed: fetched again, and a copy whose first try got
        through after all is a duplicate."""
        placed = await placed_within(batch, self.place_timeout)
        tries = {
            u.update_id: self._fetched_again.get(u.update_id, 0) + 1
            for u, ok in zip(updates, placed, strict=True)
            if not ok
        }
        for update_id in [u for u, n in tries.items() if n > MAX_FETCHES_UNPLACED]:
            # Failing for another reason than the store: do not loop on it.
            log.error("telegram update dropped: never placed", extra={"update_id": update_id})
        # Only what is fetched again keeps its count: the next batch starts with those.
        self._fetched_again = {u: n for u, n in tries.items() if n <= MAX_FETCHES_UNPLACED}
        if self._fetched_again:
            self.offset = min(self._fetched_again)
            log.warning(
                "telegram updates not placed, fetched again",
                extra={"count": len(self._fetched_again)},
            )

    async def _handle(self, update: Update, placed: asyncio.Future[bool]) -> bool:
        """Dispatch one update; False when it failed (logged), True otherwise."""
        sink = self.on_inbound
        if self.placing is not None:
            placing = self.placing

            async def sink(inbound: Inbound) -> None:
                await placing(inbound, functools.partial(settle, placed, True))

        try:
            await dispatch_update(update, self.channel, sink, self.on_agent, self.on_callback)
        except Exception:
            # One bad update must not stop the others; it is logged with its id, not its text.
            self.handler_errors += 1
            log.exception("telegram update failed", extra={"update_id": update.update_id})
            return False
        finally:
            self._slots.release()
        return True
