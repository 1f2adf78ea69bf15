"""The Telegram channel: Outbound replies to customers, and the agents' forum topics.

Sending, in one picture::

    send(out) ──> per-chat lane (FIFO lock: one reply at a time, in call order)
                     └─> for each part: chat bucket ─> overall window ─> Bot API call
                                             429: sleep retry_after, try again
                                             network / 5xx: jittered backoff, try again
                                             403, 400, 404 ...: DeliveryError at once
                                             after max_retries: DeliveryError

Pacing: ``pacing.py``; the lean path of the hot calls: ``sender.py``; rendering: ``render.py``.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import aiohttp
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BufferedInputFile, Message
from pydantic import SecretStr

from bot.channels.base import SEND_LANE, DeliveryError
from bot.channels.telegram.pacing import Lanes, SlidingWindow, TokenBucket
from bot.channels.telegram.render import MAX_TEXT, build_keyboard, text_parts
from bot.channels.telegram.sender import BotApi
from bot.concurrency import GaveUp, on_wire, retry_delay, retrying
from flows.types import Channel, Outbound

log = logging.getLogger("bot.channels.telegram")

T = TypeVar("T")

MAX_TOPIC_NAME = 128
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024  # Bot API: larger photos must go as documents
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Bot API: the largest file a bot may upload
_PHOTO_MIMES = frozenset({"image/jpeg", "image/png"})


def make_bot(token: SecretStr, api_url: str) -> Bot:
    """An aiogram Bot speaking plain text to the Bot API at ``api_url``."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    return Bot(
        token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=None),
    )


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
        self._global = SlidingWindow(global_rate)
        self.lanes = Lanes(per_chat_interval, group_per_minute)
        self.api = BotApi(bot)

    async def aclose(self) -> None:
        """Close the lean path's HTTP session (aiogram's Bot session is closed by its owner)."""
        await self.api.aclose()

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
        parts = text_parts(out.text)
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
            await self.api.post("answerCallbackQuery", {"callback_query_id": callback_query_id})
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
            for part in text_parts(text) or [text[:MAX_TEXT]]:
                send = functools.partial(self.send_text, chat, part, thread_id=thread_id)
                sent = await self._call(chat, send)
                first = sent if first is None else first
        assert first is not None  # one part at least
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
        """One ``sendMessage`` (plain text), no pacing or retries; the new message's id."""
        return await self.api.send_text(chat, text, reply_markup=reply_markup, thread_id=thread_id)

    # ---- order, pacing, retries -------------------------------------------------------------

    def _lane(
        self, chat: int | str, *, paced: bool = True
    ) -> AbstractAsyncContextManager[TokenBucket]:
        return self.lanes.hold(chat, paced=paced)

    async def _call(
        self,
        chat: int | str,
        make: Callable[[], Awaitable[T]],
    ) -> T:
        """One Bot API call with pacing and retries; DeliveryError when it cannot succeed."""
        bucket = self.lanes.bucket(chat)
        made = 0  # attempts so far

        async def once() -> T:
            nonlocal made
            made += 1
            await bucket.take()
            async with self._global.slot(low=SEND_LANE.get() == "notice"):
                await on_wire()
                result = await make()
            if self.on_outcome is not None:
                self.on_outcome(True)
            return result

        def retried(err: Exception, attempts: int, delay: float) -> None:
            log.warning(
                "telegram send retry",
                extra={
                    "conv": f"telegram:{chat}",
                    "attempt": attempts,
                    "reason": _reason(err),
                    "delay": delay,
                },
            )

        try:
            return await retrying(
                once, self._wait_after, attempts=self.max_retries + 1, on_retry=retried
            )
        except GaveUp as err:
            msg = f"gave up after {err.attempts} attempts ({_reason(err.error)})"
            raise self._failed(chat, DeliveryError(msg), err.attempts - 1) from err.error
        except TelegramAPIError as err:  # refused (too large, bad request, blocked...)
            raise self._failed(chat, err, made - 1) from err

    def _wait_after(self, err: Exception, attempt: int) -> float | None:
        """How long to wait before retrying a failed call; None: not worth retrying."""
        if isinstance(err, TelegramRetryAfter):
            return float(err.retry_after)
        if isinstance(err, TelegramEntityTooLarge):
            return None
        if isinstance(err, TelegramNetworkError | TelegramServerError | ClientDecodeError):
            if self.on_outcome is not None:
                self.on_outcome(False)
            # Telegram may have delivered before the error reached us; a rare duplicate
            # beats a reply lost for good.
            return retry_delay(attempt, self.retry_backoff, 30.0, (0.8, 1.2))
        return None

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
        return self.api.scrub(text)


def _reason(err: Exception) -> str:
    """Why a call is retried, for the log."""
    return "flood control" if isinstance(err, TelegramRetryAfter) else type(err).__name__
