"""The WhatsApp webhook (``GET|POST /webhooks/whatsapp``): Meta's handshake, the signature on
the raw body, lenient decoding, and one task per event in arrival order.

A POST is answered 200 only once its events have their places in their conversations' order
(Meta forgets what was answered 200), else 503 and Meta sends it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import SecretStr

from bot.channels.base import InboundSink, PlacingSink, placed_within, settle, settle_when_done
from bot.channels.whatsapp.channel import WhatsAppChannel
from bot.channels.whatsapp.parse import parse_webhook, timestamps
from bot.channels.whatsapp.settings import WhatsAppSettings
from flows.types import Inbound, Kind

_T = TypeVar("_T")

log = logging.getLogger("bot.channels.whatsapp")

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
MAX_DEPTH = 64  # Meta's payloads nest about 8 deep


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
        if self._channel is not None:
            # Before any event is handed on (each customer's events keep their order): the
            # windows they open, the paged lists they end.
            await self._channel.heard(events, stamps, self._clock())
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
