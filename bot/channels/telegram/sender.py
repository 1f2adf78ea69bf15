"""The lean Bot API path for the hot calls (``sendMessage``, ``answerCallbackQuery``).

One JSON POST on the channel's own aiohttp session, the reply read as a plain dict: aiogram's
pydantic method objects, form bodies and response models cost more CPU than the rest of a
message's handling. A reply that is not a success goes through aiogram's own response check
(``BaseSession.check_response``), so the errors raised are exactly those of aiogram's client and
the channel's retries treat both paths alike. Everything else (topics, copies, files, updates)
uses aiogram's client.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import certifi
import orjson
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramNetworkError
from aiogram.methods import AnswerCallbackQuery, GetUpdates, SendMessage, TelegramMethod
from yarl import URL

from bot.channels.telegram.parse import as_int

# Only built when a call fails: aiogram's exceptions want the method, and their text names it.
_STAND_INS: dict[str, type[TelegramMethod[Any]]] = {
    "sendMessage": SendMessage,
    "answerCallbackQuery": AnswerCallbackQuery,
    "getUpdates": GetUpdates,
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
        self._http: aiohttp.ClientSession | None = None  # made on first use
        self._urls: dict[str, URL] = {}  # Bot API method -> its URL (the token is in it)

    async def aclose(self) -> None:
        """Close this path's HTTP session (aiogram's Bot session is closed by its owner)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def scrub(self, text: str) -> str:
        """``text`` without the bot token (aiohttp errors can quote the request URL)."""
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
        session = self._http
        if session is None or session.closed:
            session = self._http = _lean_session(self.bot.session.timeout)
        url = self._urls.get(method)
        if url is None:  # parsed once per method, not on every call
            url = self._urls[method] = URL(self.bot.session.api.api_url(self.bot.token, method))
        try:
            call = (
                session.post(url, json=payload)
                if seconds is None
                else session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=seconds))
            )
            async with call as response:
                status = response.status
                content = await response.read()
        except TimeoutError as err:
            raise TelegramNetworkError(
                method=_stand_in(method, payload), message="Request timeout error"
            ) from err
        except aiohttp.ClientError as err:
            # The error may quote the URL, which carries the token: scrubbed, and not chained.
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
