"""WhatsApp Cloud API channel: the signed webhook (inbound) and a thin Graph API client (outbound).

Why our own client and not pywa (4.5.0): pywa is a framework. Its webhook side registers routes on
Flask or FastAPI and dispatches to its own handlers, filters and update types, which would duplicate
our Inbound/engine pipeline and does not mount on aiohttp; its Graph host is fixed (only the API
version is configurable), so tests could not point it at a local fake without patching transports.
What we need is small: one POST for messages, two GETs for media, an HMAC check, and retry rules
that map onto ``DeliveryError``/``WindowClosed``, so a few hundred lines of our own are cheaper
than a framework to work around.

The Graph client runs on aiohttp, like the Telegram sender, not on httpx: httpcore's pool (1.0.9)
leaks a connection slot whenever a request is cancelled or times out while it waits for a
connection (encode/httpcore#1093), and under duplicate deliveries and a slow Graph every slot
leaked: every send then failed with ``PoolTimeout``, no socket open, until a restart. aiohttp's
connector frees a slot whatever ends the request, and every wait is bounded (``GRAPH_TIMEOUT``,
``MEDIA_TIMEOUT``).

Error mapping of a Graph call (``_request``)::

    transport error, timeout, HTTP 5xx       -> retried with jittered backoff
    HTTP 429, error.code 130429/131056/4/80007 (throttling) -> retried (Retry-After honoured)
    error.code 131047 (24-hour window closed) -> WindowClosed, not retried
    any other 4xx                            -> DeliveryError, not retried
    retries exhausted                        -> DeliveryError

The access token is sent only in the Authorization header of each request (never set on a shared
client, never logged, scrubbed from any error text).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import certifi
import orjson
from aiohttp import web
from cachetools import LRUCache
from pydantic import SecretStr

from bot.channels.base import (
    DeliveryError,
    InboundSink,
    PlacingSink,
    WindowClosed,
    placed_within,
    settle,
    settle_when_done,
)
from bot.channels.whatsapp_parse import as_dict as _dict
from bot.channels.whatsapp_parse import as_str as _str
from bot.channels.whatsapp_parse import dicts as _dicts
from bot.channels.whatsapp_parse import is_phone_id, parse_webhook, timestamps
from bot.settings import WhatsAppSettings
from flows.types import Channel, Inbound, Kind, Media, Option, Outbound

_T = TypeVar("_T")

log = logging.getLogger(__name__)

WINDOW_SECONDS = 24 * 3600
# Per-customer memory of one process, bounded: the least recently seen customers are forgotten
# (their window is then unknown, and Graph decides; a forgotten paged list is re-prompted).
WINDOWS_KEPT = 50_000
PAGED_KEPT = 5_000
TEXT_LIMIT = 4096  # characters of a text message
BODY_LIMIT = 1024  # characters of an interactive message body
BUTTON_TITLE_LIMIT = 20
LIST_BUTTON_LIMIT = 20
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
MAX_BUTTONS = 3
MAX_ROWS = 10
MORE_PREFIX = "__more:"

# Graph error codes: throttling (retry later) and the closed customer service window.
RATE_CODES = frozenset({4, 80007, 130429, 131056})
WINDOW_CLOSED_CODE = 131047

# Every wait of a Graph call is bounded: for a free connection and the connection itself
# (``connect``), for each read (``sock_read``: a hung Graph holds a connection 15 s at most), and
# the whole call; a file's bytes may take longer than a message.
GRAPH_TIMEOUT = aiohttp.ClientTimeout(total=30.0, connect=20.0, sock_connect=5.0, sock_read=15.0)
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=300.0, connect=20.0, sock_connect=5.0, sock_read=15.0)
GRAPH_CONNECTIONS = 100

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
# The reverse, for sending a media message.
_SEND_TYPES = {
    "photo": "image",
    "image": "image",
    "audio": "audio",
    "voice": "audio",
    "video": "video",
    "video_note": "video",
    "animation": "video",
    "document": "document",
    "sticker": "sticker",
}
_CAPTIONED = frozenset({"image", "video", "document"})  # WhatsApp's types that take a caption


def send_type(kind: str) -> str:
    """The WhatsApp message type a channel-neutral media type is sent as."""
    return _SEND_TYPES.get(kind, "document")


def takes_caption(kind: str) -> bool:
    """Whether WhatsApp shows a caption on this media type (audio and stickers have none)."""
    return send_type(kind) in _CAPTIONED


# --------------------------------------------------------------------------- pure helpers


def verify_signature(raw_body: bytes, header: str | None, app_secret: SecretStr) -> bool:
    """Whether ``X-Hub-Signature-256`` is the HMAC-SHA256 of the raw body with the app secret."""
    if not header:
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    key = app_secret.get_secret_value().encode()
    expected = hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), match[1].lower().encode())


def window_open_at(last_inbound: float | None, now: float) -> bool:
    """Whether free-form messages may be sent: less than 24 h since the customer last wrote."""
    if last_inbound is None:
        return False
    return now - last_inbound < WINDOW_SECONDS


def national_number(wa_id: str, country_code: str) -> str:
    """The number without its country code (what WispHub stores): "573001112233" -> "3001112233"."""
    digits = re.sub(r"\D", "", wa_id)
    code = re.sub(r"\D", "", country_code)
    if code and digits.startswith(code) and len(digits) > len(code):
        return digits[len(code) :]
    return digits


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut a text into pieces of at most ``limit`` characters, at a line break or space if any."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut < limit // 2:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut < limit // 2:
            cut = limit  # one long word: a hard cut is better than a rejected message
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _head_and_body(text: str, limit: int = BODY_LIMIT) -> tuple[list[str], str]:
    """Split a text into leading text messages and a final part short enough for a body."""
    text = text.strip()
    if len(text) <= limit:
        return [], text
    # Break at the last paragraph or word boundary that leaves the tail within the limit.
    start = len(text) - limit
    cut = text.find("\n", start)
    if cut == -1:
        cut = text.find(" ", start)
    if cut == -1:
        cut = start
    return split_text(text[:cut]), text[cut:].strip()


def _shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _unique(titles: list[str], limit: int) -> list[str]:
    """Make titles distinct (WhatsApp rejects duplicates), keeping each within ``limit``."""
    seen: set[str] = set()
    out: list[str] = []
    for title in titles:
        candidate, n = title, 1
        while candidate.casefold() in seen:
            n += 1
            suffix = f" ({n})"
            candidate = title[: limit - len(suffix)].rstrip() + suffix
        seen.add(candidate.casefold())
        out.append(candidate)
    return out


def _row_text(label: str) -> tuple[str, str]:
    """A list row's title (24) and description (72, the rest of a longer label)."""
    label = " ".join(label.split())
    if len(label) <= ROW_TITLE_LIMIT:
        return label, ""
    cut = label.rfind(" ", 0, ROW_TITLE_LIMIT + 1)
    if cut < ROW_TITLE_LIMIT // 2:
        cut = ROW_TITLE_LIMIT
    title, rest = label[:cut].rstrip(), label[cut:].strip()
    return title, _shorten(rest, ROW_DESCRIPTION_LIMIT)


def _pages(options: tuple[Option, ...]) -> list[tuple[Option, ...]]:
    """Options in list pages: 9 per page plus a "more" row, the last page up to 10."""
    pages: list[tuple[Option, ...]] = []
    rest = options
    while len(rest) > MAX_ROWS:
        pages.append(rest[: MAX_ROWS - 1])
        rest = rest[MAX_ROWS - 1 :]
    pages.append(rest)
    return pages


def more_page(payload: str | None) -> int | None:
    """The page asked for by a "more" row's reply id, else None."""
    if payload is None or not payload.startswith(MORE_PREFIX):
        return None
    number = payload.removeprefix(MORE_PREFIX)
    return int(number) if number.isdigit() else None


# --------------------------------------------------------------------------- inbound


MAX_DEPTH = 64  # Meta's payloads nest about 8 deep


def decode_body(raw: bytes) -> tuple[object, bool]:
    """The webhook body as JSON, and whether it needed the lenient parser (``ValueError``
    when it is not JSON, or nests deeper than ``MAX_DEPTH``).

    orjson refuses a lone surrogate (an escaped ``"\\ud800"``) anywhere in the body, which
    would refuse the other messages of the call with it; Python's parser reads it, and the
    message carrying it is then answered as junk (``_sound_events``). orjson stops at depth
    1024; Python's parser would overflow its recursion on deeper JSON, so the depth is
    checked on the bytes first."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError as err:
        if _depth(raw) > MAX_DEPTH:
            msg = f"JSON nested deeper than {MAX_DEPTH}"
            raise ValueError(msg) from err
        try:
            return json.loads(raw), True
        except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as err2:
            raise ValueError(str(err2)) from err2


def _depth(raw: bytes) -> int:
    """How deep brackets nest, outside strings (a bound, not a parse)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _utf8(value: object) -> bool:
    """Whether a value can be written as UTF-8 (a lone surrogate cannot: Redis, logs, Graph)."""
    if not isinstance(value, str):
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _sound_events(events: list[Inbound]) -> list[Inbound]:
    """Events that can be stored and answered: one whose text (or caption, name, payload) is not
    valid Unicode becomes junk (answered "text only"); one whose sender or id is not, is skipped."""
    out: list[Inbound] = []
    for inbound in events:
        if not (_utf8(inbound.key.chat_id) and _utf8(inbound.event_id)):
            log.warning("whatsapp message with an unreadable sender or id skipped")
            continue
        media = dataclasses.astuple(inbound.media) if inbound.media is not None else ()
        fields = (inbound.text, inbound.payload, inbound.phone, inbound.display_name, *media)
        if all(_utf8(v) for v in fields):
            out.append(inbound)
            continue
        log.warning(
            "whatsapp message with invalid text taken as junk", extra={"conv": str(inbound.key)}
        )
        out.append(
            Inbound(
                key=inbound.key,
                event_id=inbound.event_id,
                kind=Kind.OTHER,
                phone=inbound.phone if _utf8(inbound.phone) else None,
                user_id=inbound.user_id,
            )
        )
    return out


class WhatsAppWebhook:
    """aiohttp handlers for ``GET|POST /webhooks/whatsapp``: verification, signature, dispatch."""

    def __init__(
        self,
        settings: WhatsAppSettings,
        on_inbound: InboundSink,
        *,
        on_mark_read: Callable[[str], Awaitable[None]] | None = None,
        channel: WhatsAppChannel | None = None,
        clock: Callable[[], float] = time.time,
        placing: PlacingSink | None = None,
        place_timeout: float = 5.0,
    ) -> None:
        # ``channel``, when given, learns of each inbound (the 24-hour window) and serves the
        # "more" rows of paged lists itself, so the engine never sees those presses.
        # ``placing``, when given, is used instead of ``on_inbound``: the POST is answered 200
        # only once its events have their places (Meta forgets what was answered 200), else 503
        # and Meta sends it again (the events that did get a place are repeats then).
        self._settings = settings
        self._sink = on_inbound
        self._placing = placing
        self._place_timeout = place_timeout
        self._mark_read = on_mark_read
        self._channel = channel
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()

    async def get(self, request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo ``hub.challenge`` when the verify token matches."""
        token = self._settings.verify_token
        mode = request.query.get("hub.mode", "")
        given = request.query.get("hub.verify_token", "")
        if (
            token is not None
            and mode == "subscribe"
            and hmac.compare_digest(given.encode(), token.get_secret_value().encode())
        ):
            return web.Response(text=request.query.get("hub.challenge", ""))
        log.warning("whatsapp verification refused", extra={"mode": mode})
        return web.Response(status=403, text="forbidden")

    async def post(self, request: web.Request) -> web.Response:
        """Check the signature on the raw body, then answer 200 and handle the events apart."""
        raw = await request.read()
        secret = self._settings.app_secret
        header = request.headers.get("X-Hub-Signature-256")
        if secret is None or not verify_signature(raw, header, secret):
            log.warning("whatsapp webhook with a missing or wrong signature")
            return web.Response(status=403, text="forbidden")
        try:
            payload, lenient = decode_body(raw)
        except ValueError as err:
            log.warning("whatsapp webhook with a body that is not JSON: %s", err)
            return web.Response(status=400, text="malformed JSON")
        if not isinstance(payload, dict):
            log.warning("whatsapp webhook with a body that is not a JSON object")
            return web.Response(status=400, text="expected a JSON object")
        events = parse_webhook(payload, self._settings.phone_number_id)
        if lenient:
            events = _sound_events(events)
        stamps = timestamps(payload)
        placed: list[asyncio.Future[bool]] = []
        loop = asyncio.get_running_loop()
        for inbound in events:
            # A task per event, started in order: they reach the engine's per-conversation
            # queue in that order, and one customer's turn does not hold up another's.
            future: asyncio.Future[bool] = loop.create_future()
            placed.append(future)
            task = self._spawn(self._handle(inbound, stamps, future))
            task.add_done_callback(functools.partial(settle_when_done, future))
        accepted = self._placing is None or all(await placed_within(placed, self._place_timeout))
        if not accepted:
            log.warning("whatsapp events not accepted: the session store did not answer")
            return web.Response(status=503, text="try again")
        return web.Response(text="ok")

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        # Keep a reference: the loop holds tasks weakly, and drain() waits for them.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _handle(
        self, inbound: Inbound, stamps: dict[str, float], placed: asyncio.Future[bool]
    ) -> bool:
        """One event: False when it failed before it had its place (logged)."""
        conv = str(inbound.key)
        moved = inbound.kind is Kind.MOVED  # Meta's notice, not the customer's message
        if self._channel is not None and not moved:
            at = stamps.get(inbound.event_id, self._clock())
            self._channel.note_inbound(inbound.key.chat_id, at)
        if self._mark_read is not None and not moved:
            self._spawn(self._read(inbound.event_id, conv))
        try:
            if self._channel is not None and await self._channel.serve_more(inbound):
                return True
            if self._placing is not None:
                await self._placing(inbound, functools.partial(settle, placed, True))
            else:
                await self._sink(inbound)
        except Exception:
            # One bad event must not drop the others of the same call.
            log.exception("whatsapp inbound failed", extra={"conv": conv})
            return False
        return True

    async def _read(self, wamid: str, conv: str) -> None:
        assert self._mark_read is not None
        try:
            await self._mark_read(wamid)
        except Exception:
            log.warning("whatsapp mark-read failed", extra={"conv": conv}, exc_info=True)

    async def drain(self) -> None:
        """Wait until every event received so far has been handled (graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# --------------------------------------------------------------------------- outbound


class WhatsAppChannel:
    """The ChannelAdapter for WhatsApp: renders Outbound replies and sends them through Graph."""

    name: Channel = "whatsapp"

    def __init__(
        self,
        settings: WhatsAppSettings,
        http: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        list_button: str = "Options",
        more_label: str = "More",
        on_outcome: Callable[[bool], None] | None = None,
        message_timeout: aiohttp.ClientTimeout = GRAPH_TIMEOUT,
        media_timeout: aiohttp.ClientTimeout = MEDIA_TIMEOUT,
    ) -> None:
        # ``on_outcome`` hears of every Graph call: True when Graph answered it, False when it
        # failed (transport, 5xx, throttling, a refusal), for the readiness check.
        if settings.access_token is None or not settings.phone_number_id:
            msg = "WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID are required"
            raise ValueError(msg)
        self._token = settings.access_token
        self._base = str(settings.api_url).rstrip("/")
        self._messages_url = f"{self._base}/{settings.phone_number_id}/messages"
        self._media_url = f"{self._base}/{settings.phone_number_id}/media"
        self._own_http = http is None
        self._http = http  # made on first use when not given (a session needs a running loop)
        self._on_outcome = on_outcome
        self._message_timeout = message_timeout  # a message, a read mark, a media look-up
        self._media_timeout = media_timeout  # a file's bytes, down or up
        self._clock = clock
        self._max_retries = max_retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        # UI chrome comes from the message catalogue; the defaults are neutral placeholders.
        self._list_button = _shorten(list_button, LIST_BUTTON_LIMIT)
        self._more_label = _shorten(more_label, ROW_TITLE_LIMIT)
        self._last_inbound: LRUCache[str, float] = LRUCache(maxsize=WINDOWS_KEPT)
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        # Paged option lists, per chat, until the customer answers (in-process only).
        self._paged: LRUCache[str, tuple[str, list[tuple[Option, ...]]]] = LRUCache(PAGED_KEPT)

    # -- the 24-hour customer service window
    #
    # Kept in this process's memory only: after a restart the window of a customer who has not
    # written since is unknown, and the Graph API decides (131047 -> WindowClosed, which the
    # service reports in the agents' topic). Once known closed, later sends fail fast without
    # a doomed API call, until the customer writes again.

    def note_inbound(self, wa_id: str, at: float) -> None:
        """Remember that the customer wrote at ``at`` (epoch seconds)."""
        self._last_inbound[wa_id] = max(at, self._last_inbound.get(wa_id, at))

    def window_open(self, wa_id: str) -> bool:
        """Whether the customer wrote within the last 24 hours (as far as this process knows)."""
        return window_open_at(self._last_inbound.get(wa_id), self._clock())

    def window_known_closed(self, wa_id: str) -> bool:
        """True only when this process knows the window is closed (not when it does not know)."""
        return wa_id in self._last_inbound and not self.window_open(wa_id)

    # -- sending

    async def send(self, out: Outbound) -> None:
        """Deliver one reply (several messages when long or paged) in order for its chat."""
        chat = out.key.chat_id
        if self.window_known_closed(chat):
            msg = f"{out.key}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        if out.media is not None and not _sendable(out):
            # Checked before anything is sent, so a reply is delivered whole or not at all.
            msg = f"{out.key}: a {out.media.type} from another channel cannot be sent on WhatsApp"
            log.warning("whatsapp reply refused: foreign media", extra={"conv": str(out.key)})
            raise DeliveryError(msg)
        async with self._chat_lock(chat):
            try:
                for message in self._render(out):
                    await self._send_one(message, str(out.key))
            except WindowClosed:
                self._last_inbound[chat] = 0.0  # known closed until the customer writes again
                raise

    async def send_media(self, wa_id: str, media_id: str, kind: str, caption: str = "") -> None:
        """Send an uploaded file (an agent's photo or document) with its caption.

        ``kind`` is a channel-neutral media type (photo, document, ...); the 24-hour window
        rules are those of ``send``.
        """
        if self.window_known_closed(wa_id):
            msg = f"whatsapp:{wa_id}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        message = self._media_message(wa_id, Media(kind, media_id, caption))
        async with self._chat_lock(wa_id):
            try:
                await self._send_one(message, f"whatsapp:{wa_id}")
            except WindowClosed:
                self._last_inbound[wa_id] = 0.0  # known closed until the customer writes again
                raise

    async def serve_more(self, inbound: Inbound) -> bool:
        """Answer a press on a "more" row with the next page; False for any other event."""
        page = more_page(inbound.payload) if inbound.kind is Kind.BUTTON else None
        if page is None:
            self._paged.pop(inbound.key.chat_id, None)  # any other answer ends the paging
            return False
        chat = inbound.key.chat_id
        paged = self._paged.get(chat)
        if paged is None or page >= len(paged[1]):
            return False  # e.g. after a restart: the engine re-prompts as for any stray press
        body, pages = paged
        async with self._chat_lock(chat):
            await self._send_one(self._list(chat, body, pages, page), str(inbound.key))
        return True

    def _render(self, out: Outbound) -> list[dict[str, Any]]:
        chat = out.key.chat_id
        messages: list[dict[str, Any]] = []
        if out.media is not None:
            messages.append(self._media_message(chat, out.media))
        if not out.options:
            self._paged.pop(chat, None)
            messages += [self._text(chat, part) for part in split_text(out.text)]
            return messages
        head, body = _head_and_body(out.text)
        body = body or self._list_button  # an interactive message needs a non-empty body
        messages += [self._text(chat, part) for part in head]
        if len(out.options) <= MAX_BUTTONS:
            self._paged.pop(chat, None)
            messages.append(self._buttons(chat, body, out.options))
            return messages
        pages = _pages(out.options)
        if len(pages) > 1:
            self._paged[chat] = (body, pages)
        else:
            self._paged.pop(chat, None)
        messages.append(self._list(chat, body, pages, 0))
        return messages

    @staticmethod
    def _envelope(chat: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        # Graph takes a phone number in ``to``, a business-scoped user id (BSUID) in ``recipient``.
        field = "to" if is_phone_id(chat) else "recipient"
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            field: chat,
            "type": kind,
            kind: content,
        }

    def _text(self, chat: str, text: str) -> dict[str, Any]:
        return self._envelope(chat, "text", {"body": text, "preview_url": False})

    def _buttons(self, chat: str, body: str, options: tuple[Option, ...]) -> dict[str, Any]:
        titles = _unique(
            [_shorten(o.label, BUTTON_TITLE_LIMIT) for o in options], BUTTON_TITLE_LIMIT
        )
        buttons = [
            {"type": "reply", "reply": {"id": o.id, "title": t}}
            for o, t in zip(options, titles, strict=True)
        ]
        return self._envelope(
            chat,
            "interactive",
            {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}},
        )

    def _list(
        self, chat: str, body: str, pages: list[tuple[Option, ...]], page: int
    ) -> dict[str, Any]:
        options = pages[page]
        texts = [_row_text(o.label) for o in options]
        titles = _unique([t for t, _ in texts], ROW_TITLE_LIMIT)
        rows: list[dict[str, str]] = []
        for option, title, (_, description) in zip(options, titles, texts, strict=True):
            row = {"id": option.id, "title": title}
            if description:
                row["description"] = description
            rows.append(row)
        if page + 1 < len(pages):
            rows.append({"id": f"{MORE_PREFIX}{page + 1}", "title": self._more_label})
        action = {"button": self._list_button, "sections": [{"rows": rows}]}
        return self._envelope(
            chat, "interactive", {"type": "list", "body": {"text": body}, "action": action}
        )

    def _media_message(self, chat: str, media: Media) -> dict[str, Any]:
        kind = send_type(media.type)
        content: dict[str, Any] = (
            {"link": media.ref}
            if media.ref.startswith(("https://", "http://"))
            else {"id": media.ref}
        )
        if media.caption and kind in _CAPTIONED:
            content["caption"] = _shorten(media.caption, BODY_LIMIT)
        return self._envelope(chat, kind, content)

    async def _send_one(self, message: dict[str, Any], conv: str) -> None:
        response = await self._request("POST", self._messages_url, conv, json=message)
        try:
            wamid = _str(_dict(next(_dicts(response.json().get("messages")), {})).get("id"))
        except (ValueError, AttributeError) as err:
            # The message was probably accepted; say so rather than pretend it failed.
            msg = f"undecodable Graph answer for a sent message (HTTP {response.status})"
            raise DeliveryError(msg) from err
        log.info("whatsapp sent", extra={"conv": conv, "wamid": wamid, "type": message["type"]})

    # -- other Graph calls

    async def mark_read(self, wamid: str) -> None:
        """Show the customer's message as read (blue ticks); a failure is logged, not raised."""
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        try:
            await self._request("POST", self._messages_url, "", json=payload, retries=1)
        except DeliveryError as err:
            log.warning("whatsapp mark-read failed: %s", err, extra={"wamid": wamid})

    async def fetch_media(self, media_id: str) -> tuple[bytes, str]:
        """Download a customer's media (to forward it to agents): its bytes and MIME type."""
        meta = await self._request("GET", f"{self._base}/{media_id}", "")
        try:
            info = _dict(meta.json())
        except ValueError as err:
            msg = "undecodable Graph answer for a media lookup"
            raise DeliveryError(msg) from err
        url, mime = _str(info.get("url")), _str(info.get("mime_type"))
        if not url.startswith(("https://", "http://")):
            msg = "Graph gave no download URL for the media"
            raise DeliveryError(msg)
        data = await self._request("GET", url, "", media=True)
        mime = mime or data.headers.get("content-type", "application/octet-stream")
        return data.body, mime.split(";")[0].strip()

    async def upload_media(self, data: bytes, mime: str, filename: str = "file") -> str:
        """Upload a file (an agent's attachment) and return the media id to send it with."""
        response = await self._request(
            "POST",
            self._media_url,
            "",
            form={"messaging_product": "whatsapp", "type": mime, "file": (filename, data, mime)},
            retries=self._max_retries,
            media=True,
        )
        try:
            media_id = _str(_dict(response.json()).get("id"))
        except ValueError as err:
            msg = "undecodable Graph answer for a media upload"
            raise DeliveryError(msg) from err
        if not media_id:
            msg = "Graph returned no id for an uploaded media"
            raise DeliveryError(msg)
        return media_id

    async def aclose(self) -> None:
        """Close the HTTP client when this channel created it."""
        if self._own_http and self._http is not None:
            await self._http.close()

    # -- plumbing

    @contextlib.asynccontextmanager
    async def _chat_lock(self, chat: str) -> AsyncIterator[None]:
        # asyncio.Lock wakes waiters first-come first-served: sends to one chat keep call order.
        lock = self._locks.setdefault(chat, asyncio.Lock())
        self._lock_users[chat] = self._lock_users.get(chat, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[chat] -= 1
            if not self._lock_users[chat]:  # forget idle chats so the dict does not grow
                del self._lock_users[chat]
                del self._locks[chat]

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                ssl=ssl.create_default_context(cafile=certifi.where()),
                limit=GRAPH_CONNECTIONS,
                ttl_dns_cache=300,
            )
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._message_timeout)
            self._own_http = True
        return self._http

    async def _call(
        self,
        method: str,
        url: str,
        json: dict[str, Any] | None,
        form: dict[str, str | tuple[str, bytes, str]] | None,
        limits: aiohttp.ClientTimeout,
    ) -> GraphAnswer:
        """One HTTP exchange, its answer read whole (so the connection goes back at once)."""
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        data: aiohttp.FormData | bytes | None = None
        if json is not None:
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = aiohttp.FormData()  # built per attempt: a sent form cannot be sent again
            for name, value in form.items():
                if isinstance(value, tuple):
                    filename, content, mime = value
                    data.add_field(name, content, filename=filename, content_type=mime)
                else:
                    data.add_field(name, value)
        session = self._session()
        call = session.request(method, url, headers=headers, data=data, timeout=limits)
        async with call as response:
            body = await response.read()
            return GraphAnswer(response.status, response.reason or "", response.headers, body)

    def _outcome(self, ok: bool) -> None:
        if self._on_outcome is not None:
            self._on_outcome(ok)

    async def _request(
        self,
        method: str,
        url: str,
        conv: str,
        *,
        retries: int | None = None,
        json: dict[str, Any] | None = None,
        form: dict[str, str | tuple[str, bytes, str]] | None = None,
        media: bool = False,
    ) -> GraphAnswer:
        """One Graph call with the retry and error rules drawn in the module docstring."""
        attempts = (self._max_retries if retries is None else retries) + 1
        limits = self._media_timeout if media else self._message_timeout
        problem = ""
        for attempt in range(attempts):
            delay: float | None = None
            try:
                response = await self._call(method, url, json, form, limits)
            except (aiohttp.ClientError, TimeoutError) as err:
                # aiohttp's timeouts are TimeoutErrors; its texts may quote the URL (no token).
                problem = f"transport error {type(err).__name__}"
                self._outcome(False)
            else:
                if response.ok:
                    self._outcome(True)
                    return response
                code, text = _graph_error(response)
                problem = self._scrub(f"HTTP {response.status}, Graph error {code}: {text}")
                if code == WINDOW_CLOSED_CODE:
                    self._outcome(True)  # Graph works; this customer's window is closed
                    raise WindowClosed(problem)
                self._outcome(False)
                if response.status == 429 or code in RATE_CODES:
                    delay = _retry_after(response)
                elif response.status < 500:
                    log.error("whatsapp request refused: %s", problem, extra={"conv": conv})
                    raise DeliveryError(problem)
            if attempt + 1 < attempts:
                cap = min(self._max_backoff, self._backoff * 2**attempt)
                wait = delay if delay is not None else random.uniform(cap / 2, cap)
                log.warning(
                    "whatsapp request failed, retrying: %s",
                    problem,
                    extra={"conv": conv, "attempt": attempt + 1, "wait": round(wait, 3)},
                )
                await asyncio.sleep(wait)
        msg = f"gave up after {attempts} attempts: {problem}"
        log.error("whatsapp delivery failed: %s", msg, extra={"conv": conv})
        raise DeliveryError(msg)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token.get_secret_value(), "***")


def _sendable(out: Outbound) -> bool:
    """Whether the reply's media can be sent on WhatsApp: a link, or a WhatsApp media id.

    An agent's attachment is a Telegram message id (to copy), which Graph cannot resolve.
    """
    media = out.media
    if media is None or media.ref.startswith(("https://", "http://")):
        return True
    return out.source_key is not None and out.source_key.channel == "whatsapp"


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """A Graph API answer, read whole."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return orjson.loads(self.body)


def _graph_error(response: GraphAnswer) -> tuple[int | None, str]:
    """The ``error.code`` and message of a Graph error answer, when it has one."""
    try:
        error = _dict(_dict(response.json()).get("error"))
    except ValueError:
        return None, response.reason
    code = error.get("code")
    details = _str(_dict(error.get("error_data")).get("details"))
    text = _str(error.get("message")) or response.reason
    return (code if isinstance(code, int) else None), (f"{text} ({details})" if details else text)


def _retry_after(response: GraphAnswer) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return min(max(float(raw), 0.0), 60.0)
    except ValueError:
        return None
