"""The lean Bot API path for the hot calls (``sendMessage``, ``answerCallbackQuery``, polling).

One JSON POST on the channel's own wire (``wire.py``: a small keep-alive HTTP/1.1 client for the Bot
API's one origin; aiohttp's general-purpose client was this path's biggest CPU cost), the reply
read as a plain dict: aiogram's pydantic method objects, form bodies and response models cost more
CPU than the rest of a message's handling. A reply that is not a success goes through aiogram's own
response check (``BaseSession.check_response``), so the errors raised are exactly those of
aiogram's client and the channel's retries treat both paths alike. Everything else (topics,
copies, files) uses aiogram's client.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramNetworkError
from aiogram.methods import AnswerCallbackQuery, GetUpdates, SendMessage, TelegramMethod
from yarl import URL

from bot.channels.telegram.parse import as_int
from bot.channels.telegram.wire import Wire, WireError

# Only built when a call fails: aiogram's exceptions want the method, and their text names it.
_STAND_INS: dict[str, type[TelegramMethod[Any]]] = {
    "sendMessage": SendMessage,
    "answerCallbackQuery": AnswerCallbackQuery,
    "getUpdates": GetUpdates,
}


def _stand_in(method: str, payload: dict[str, Any]) -> TelegramMethod[Any]:
    # model_construct skips validation: this object only names the call in the error.
    return _STAND_INS[method].model_construct(**payload)


def api_error(
    bot: Bot, method: str, payload: dict[str, Any], status: int, content: bytes
) -> TelegramAPIError | ClientDecodeError:
    """The exception aiogram's client raises for this Bot API reply (its ``check_response``)."""
    try:
        bot.session.check_response(
            bot, _stand_in(method, payload), status, content.decode(errors="replace")
        )
    except (TelegramAPIError, ClientDecodeError) as err:
        return err
    # check_response passed: a success the lean path did not take for one (no JSON object).
    msg = "Failed to deserialize object"
    return ClientDecodeError(msg, ValueError("not a JSON object"), content[:200])


class BotApi:
    """JSON POSTs to the Bot API for ``bot``, no pacing or retries (the channel adds those)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self._wire: Wire | None = None  # made on first use (it needs the running loop)
        self._heads: dict[str, bytes] = {}  # Bot API method -> its request head (has the token)

    async def aclose(self) -> None:
        """Close this path's connections (aiogram's Bot session is closed by its owner)."""
        if self._wire is not None:
            wire, self._wire = self._wire, None
            self._heads.clear()
            await wire.aclose()

    def scrub(self, text: str) -> str:
        """``text`` without the bot token (the request path and some errors carry it)."""
        return text.replace(self.bot.token, "<token>")

    async def send_text(
        self,
        chat: int | str,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        thread_id: int | None = None,
    ) -> int:
        """One ``sendMessage`` (plain text); the new message's id.

        Raises what aiogram's ``bot.send_message`` raises.
        """
        payload: dict[str, Any] = {"chat_id": chat, "text": text}
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        if thread_id is not None:
            payload["message_thread_id"] = thread_id
        result = await self.post("sendMessage", payload)
        message_id = as_int(result.get("message_id")) if isinstance(result, dict) else None
        if message_id is None:
            msg = "Failed to deserialize object"
            problem = ValueError("sendMessage result has no message_id")
            raise ClientDecodeError(msg, problem, result)
        return message_id

    async def post(self, method: str, payload: dict[str, Any], seconds: float | None = None) -> Any:
        """POST ``payload`` as JSON to ``method``; its ``result``, else aiogram's exception
        (``seconds``: for the whole call, else the bot session's timeout)."""
        head = self._heads.get(method)
        wire = self._wire
        if head is None or wire is None:  # the URL parsed once per method, not on every call
            url = URL(self.bot.session.api.api_url(self.bot.token, method))
            if wire is None:
                wire = self._wire = Wire(url)
            head = self._heads[method] = wire.head_of(url)
        body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        try:
            status, content = await wire.post(
                head, body, self.bot.session.timeout if seconds is None else seconds
            )
        except TimeoutError as err:
            raise TelegramNetworkError(
                method=_stand_in(method, payload), message="Request timeout error"
            ) from err
        except WireError as err:
            # Never quotes the URL, but scrubbed all the same, and not chained.
            text = self.scrub(f"{type(err).__name__}: {err}")
            raise TelegramNetworkError(method=_stand_in(method, payload), message=text) from None
        try:
            body = orjson.loads(content)
        except ValueError as err:
            msg = "Failed to decode object"
            raise ClientDecodeError(msg, err, content[:200]) from err
        if isinstance(body, dict) and 200 <= status <= 226 and body.get("ok") is True:
            return body.get("result")
        failure = api_error(self.bot, method, payload, status, content)
        if isinstance(failure, TelegramAPIError):
            failure.message = self.scrub(failure.message or f"HTTP {status}")
        raise failure
