"""A local fake of the Telegram Bot API, enough for aiogram's real client to talk to it over HTTP.

How to import it: ``tests/fakes`` is put on ``sys.path`` by ``tests/bot/channels/conftest.py``
(other test folders do the same in their own conftest), and the module is imported as a plain
top-level module: ``from telegram_api import FakeTelegram, running_fake_telegram``. A plain module
(no package) keeps mypy's file-to-module mapping simple and lets the end-to-end suite run it as a
script: ``python tests/fakes/telegram_api.py --port 8081 [--token T] [--agents-chat-id ID]``.

Tests drive it in process::

    async with running_fake_telegram() as fake:
        bot = make_bot(SecretStr(fake.token), fake.base_url)
        fake.user_text(1001, "/start")          # queued for getUpdates
        fake.fail("sendMessage", error_code=429, retry_after=1)
        sent = await fake.wait_for_messages(1001, 1)

A subprocess drives it through the control routes ``POST /_fake/{helper}`` (JSON body = the
helper's keyword arguments, e.g. ``/_fake/user_text`` ``{"chat_id": 1001, "text": "hola"}``) and
``GET /_fake/sent/{chat_id}``, ``GET /_fake/wait/{chat_id}?n=3&timeout=5`` (blocks until that
many messages arrived; 408 otherwise), ``GET /_fake/calls``. When serving it prints one line,
``fake telegram api on http://HOST:PORT``, so a parent process knows it is ready.

What it models: update ids and offsets, long polling with a timeout, per-chat message ids shared by
users and the bot, forum topics (ids increase; closing a closed topic is ``TOPIC_NOT_MODIFIED``),
webhooks (``getUpdates`` is a 409 while one is set), files (``add_file`` makes one known to
``getFile`` and downloadable at ``/file/bot<token>/<path>``), Telegram's error shape
``{"ok": false, "error_code": N, "description": ..., "parameters": {"retry_after": N}}``, and a
timestamp on every call so tests check ordering and pacing without sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_TOKEN = "123456789:TEST-fake-token-AAAAAAAAAAAAAAAAAAAA"
DEFAULT_AGENTS_CHAT_ID = -1001234567890
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64

# Methods whose calls produce a message in a chat; ``sent(chat_id)`` lists these.
_SENDING = {"sendMessage", "copyMessage", "forwardMessage", "sendPhoto", "sendDocument"}

_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


@dataclass
class Call:
    """One request the fake received (failed attempts included)."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    error_code: int | None = None  # set when the fake answered with an error
    content_type: str = ""  # how the body came: JSON or a form


@dataclass
class Sent:
    """One message the bot put in a chat."""

    method: str
    chat_id: int | str
    message_id: int
    text: str | None
    reply_markup: dict[str, Any] | None
    message_thread_id: int | None
    at: float
    parse_mode: str | None = None
    from_chat_id: int | str | None = None  # copy/forward: where it came from
    source_message_id: int | None = None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row flattened."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]


@dataclass
class Fault:
    """An injected error answered instead of the real result."""

    method: str
    error_code: int
    description: str
    retry_after: int | None
    remaining: int | None  # None = forever
    chat_id: int | str | None = None
    thread_id: int | None = None  # only calls about this forum topic


@dataclass
class Topic:
    """A forum topic of a supergroup."""

    chat_id: int | str
    thread_id: int
    name: str
    closed: bool = False
    edits: list[str] = field(default_factory=list)


class FakeTelegramError(Exception):
    """The fake was used wrongly by a test (not an API error)."""


class _ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


def _chat_id(value: Any) -> int | str:
    """Chat ids arrive as text in form posts; numeric ones are ints, ``@name`` stays text."""
    if isinstance(value, int):
        return value
    text = str(value)
    try:
        return int(text)
    except ValueError:
        return text


class FakeTelegram:
    """The fake Bot API's state and its aiohttp app; see the module docstring."""

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, agents_chat_id: int = DEFAULT_AGENTS_CHAT_ID
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.agents_chat_id = agents_chat_id
        self.base_url = ""  # set once serving
        self.calls: list[Call] = []
        self.messages: list[Sent] = []
        self.topics: dict[int, Topic] = {}
        self.webhook: dict[str, Any] = {}
        self.commands: list[Any] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.chat_actions: list[tuple[int | str, str]] = []
        self.files: dict[str, str] = {}  # file_id -> file_path, for getFile
        self.downloads: dict[str, bytes] = {}  # file_path -> content, served under /file/
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int | str, itertools.count[int]] = {}
        self._thread_ids = itertools.count(101)
        self._callback_ids = itertools.count(1)
        self._faults: list[Fault] = []
        # chat -> (messages, window, since): messages before ``since`` do not count
        self._floods: dict[int | str, tuple[int, float, float]] = {}
        self.flood_refusals = 0  # calls refused by a flood limit (429)
        self._overall: tuple[int, float] | None = None  # (messages, window) over all chats
        self.overall_refusals = 0  # calls refused by the overall limit (429)
        self._changed: asyncio.Event | None = None
        self._closing = False
        self.app = web.Application()
        self.app.router.add_post("/bot{token}/{method}", self._api)
        self.app.router.add_get("/bot{token}/{method}", self._api)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self.app.router.add_post("/_fake/{helper}", self._control)
        self.app.router.add_get("/_fake/sent/{chat_id}", self._control_sent)
        self.app.router.add_get("/_fake/calls", self._control_calls)
        self.app.router.add_get("/_fake/wait/{chat_id}", self._control_wait)
        self.app.on_shutdown.append(self._on_shutdown)

    # ---- what tests read ------------------------------------------------------------------

    def sent(self, chat_id: int | str) -> list[Sent]:
        """Messages the bot put in one chat, in the order they arrived."""
        want = _chat_id(chat_id)
        return [m for m in self.messages if m.chat_id == want]

    def calls_to(self, method: str) -> list[Call]:
        """Every request to one method (failed attempts included), in arrival order."""
        return [c for c in self.calls if c.method == method]

    def refused(self, chat_id: int | str, code: int, method: str = "sendMessage") -> bool:
        """Whether a ``method`` call to that chat was answered with error ``code``."""
        return any(
            c.error_code == code and str(c.params.get("chat_id")) == str(chat_id)
            for c in self.calls_to(method)
        )

    def timestamps(self, chat_id: int | str) -> list[float]:
        """Arrival times (monotonic) of the messages delivered to one chat."""
        return [m.at for m in self.sent(chat_id)]

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by an offset."""
        return len(self._updates)

    async def wait_for_messages(
        self,
        chat_id: int | str,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the test, not for an I/O call
    ) -> list[Sent]:
        """Wait (event-based) until ``n`` messages reached the chat; return them all."""
        await self._wait_until(lambda: len(self.sent(chat_id)) >= n, timeout)
        return self.sent(chat_id)

    async def wait_for_calls(
        self,
        method: str,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - as above
    ) -> list[Call]:
        """Wait until ``n`` requests to a method arrived; return them."""
        await self._wait_until(lambda: len(self.calls_to(method)) >= n, timeout)
        return self.calls_to(method)

    async def wait_until_consumed(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until every pushed update was confirmed by a later getUpdates offset."""
        await self._wait_until(lambda: not self._updates, timeout)

    # ---- what tests control ---------------------------------------------------------------

    def fail(
        self,
        method: str,
        error_code: int = 429,
        retry_after: int | None = 1,
        count: int | None = 1,
        *,
        description: str | None = None,
        chat_id: int | str | None = None,
        thread_id: int | None = None,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` (None = all) with a Telegram error;
        only those to ``chat_id`` and about the topic ``thread_id`` when given."""
        if error_code != 429:
            retry_after = None
        text = description or _DESCRIPTIONS.get(error_code, f"Error {error_code}")
        self._faults.append(
            Fault(
                method=method,
                error_code=error_code,
                description=text.format(retry_after=retry_after),
                retry_after=retry_after,
                remaining=count,
                chat_id=_chat_id(chat_id) if chat_id is not None else None,
                thread_id=thread_id,
            )
        )

    def flood_limit(
        self, per_window: int = 20, window: float = 60.0, chat_id: int | str | None = None
    ) -> None:
        """Enforce Telegram's ceiling of a group (the agents' by default): at most
        ``per_window`` messages in any ``window`` seconds; one more is a 429 whose
        ``retry_after`` says when the window has room. Counted from now on; ``per_window=0``
        lifts the limit; a short ``window`` stands for a faster clock."""
        chat = self.agents_chat_id if chat_id is None else _chat_id(chat_id)
        if per_window <= 0:
            self._floods.pop(chat, None)
        else:
            self._floods[chat] = (per_window, window, time.monotonic())

    def overall_limit(self, per_window: int = 30, window: float = 1.0) -> None:
        """Enforce Telegram's ceiling of a bot over all chats: at most ``per_window`` messages
        in any ``window`` seconds; one more is a 429 whose ``retry_after`` says when the window
        has room. ``per_window=0`` lifts it."""
        self._overall = (per_window, window) if per_window > 0 else None

    def _overall_wait(self, method: str) -> int | None:
        """Seconds until the bot's overall window has room for one more message, else None."""
        if self._overall is None or method not in _SENDING:
            return None
        per_window, window = self._overall
        now = time.monotonic()
        for recent, message in enumerate(reversed(self.messages), 1):
            if message.at < now - window:
                break
            if recent >= per_window:
                return max(1, math.ceil(message.at + window - now))
        return None

    def _flood_wait(self, method: str, params: dict[str, Any]) -> int | None:
        """Seconds until the chat's window has room for one more message, else None."""
        overall = self._overall_wait(method)
        if overall is not None:
            self.overall_refusals += 1
            return overall
        if method not in _SENDING or "chat_id" not in params:
            return None
        limit = self._floods.get(_chat_id(params["chat_id"]))
        if limit is None:
            return None
        per_window, window, since = limit
        now = time.monotonic()
        start = max(since, now - window)
        recent = [m.at for m in self.sent(params["chat_id"]) if m.at >= start]
        if len(recent) < per_window:
            return None
        return max(1, math.ceil(recent[-per_window] + window - now))

    def add_file(self, file_id: str, content: bytes, file_path: str = "photos/file_0.jpg") -> None:
        """Make a file (e.g. an agent's photo) known to getFile and downloadable."""
        self.files[file_id] = file_path
        self.downloads[file_path] = content

    def block(self, chat_id: int | str) -> None:
        """The user blocked the bot: every send to that chat is a 403 from now on."""
        for method in _SENDING:
            self.fail(method, 403, count=None, chat_id=chat_id)

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue one update for getUpdates; ``update_id`` is assigned when missing."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._notify()
        return update

    def user_text(
        self,
        chat_id: int,
        text: str,
        *,
        first_name: str = "Ana",
        last_name: str | None = "Ruiz",
        username: str | None = None,
    ) -> dict[str, Any]:
        """A customer writes in their private chat (commands get a bot_command entity)."""
        message = self._user_message(chat_id, first_name, last_name, username)
        message["text"] = text
        if text.startswith("/"):
            length = len(text.split()[0].encode("utf-16-le")) // 2
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return self.push_update({"message": message})

    def user_press(
        self,
        chat_id: int,
        data: str,
        message_id: int,
        *,
        first_name: str = "Ana",
        last_name: str | None = "Ruiz",
    ) -> dict[str, Any]:
        """A customer presses an inline button of the bot's message ``message_id``."""
        user = self._user(chat_id, first_name, last_name, None)
        shown = next(
            (m for m in self.sent(chat_id) if m.message_id == message_id),
            None,
        )
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self._bot_user(),
            "text": shown.text if shown and shown.text else "…",
        }
        if shown is not None and shown.reply_markup:
            message["reply_markup"] = shown.reply_markup
        query = {
            "id": str(next(self._callback_ids) * 1_000_003),
            "from": user,
            "message": message,
            "chat_instance": f"ci{chat_id}",
            "data": data,
        }
        return self.push_update({"callback_query": query})

    def user_contact(
        self,
        chat_id: int,
        phone: str,
        *,
        user_id: int | None = None,
        first_name: str = "Ana",
        last_name: str | None = "Ruiz",
    ) -> dict[str, Any]:
        """A customer shares a contact; its own (the default) or someone else's (``user_id``)."""
        message = self._user_message(chat_id, first_name, last_name, None)
        contact: dict[str, Any] = {"phone_number": phone, "first_name": first_name}
        contact["user_id"] = chat_id if user_id is None else user_id
        message["contact"] = contact
        return self.push_update({"message": message})

    def user_sticker(self, chat_id: int) -> dict[str, Any]:
        """A customer sends a sticker."""
        message = self._user_message(chat_id, "Ana", "Ruiz", None)
        message["sticker"] = {
            "file_id": "CAACAgIAAxkBAAIB",
            "file_unique_id": "AgADsticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
        }
        return self.push_update({"message": message})

    def user_content(self, chat_id: int, content: dict[str, Any]) -> dict[str, Any]:
        """A customer sends a message carrying ``content`` (a story, a checklist, ...)."""
        message = self._user_message(chat_id, "Ana", "Ruiz", None)
        message.update(content)
        return self.push_update({"message": message})

    def user_photo(self, chat_id: int, caption: str = "") -> dict[str, Any]:
        """A customer sends a photo (optionally with a caption)."""
        message = self._user_message(chat_id, "Ana", "Ruiz", None)
        message["photo"] = [
            {"file_id": "AgACAgQAAxkBAAIC", "file_unique_id": "AQADph", "width": 90, "height": 90}
        ]
        if caption:
            message["caption"] = caption
        return self.push_update({"message": message})

    def agent_text(
        self,
        thread_id: int,
        text: str,
        from_id: int = 5001,
        *,
        chat_id: int | None = None,
        first_name: str = "Luis",
        is_bot: bool = False,
    ) -> dict[str, Any]:
        """An agent writes in a forum topic of the agents' supergroup (or of ``chat_id``)."""
        chat = self.agents_chat_id if chat_id is None else chat_id
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat),
            "date": int(time.time()),
            "chat": {"id": chat, "type": "supergroup", "title": "Agentes", "is_forum": True},
            "from": {"id": from_id, "is_bot": is_bot, "first_name": first_name},
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "text": text,
        }
        return self.push_update({"message": message})

    def agent_photo(
        self,
        thread_id: int,
        caption: str = "",
        from_id: int = 5001,
        *,
        first_name: str = "Luis",
    ) -> dict[str, Any]:
        """An agent posts a photo (optionally captioned) in a forum topic of the agents' group."""
        chat = self.agents_chat_id
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat),
            "date": int(time.time()),
            "chat": {"id": chat, "type": "supergroup", "title": "Agentes", "is_forum": True},
            "from": {"id": from_id, "is_bot": False, "first_name": first_name},
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "photo": [
                {
                    "file_id": "AgACAgQAAxkBAAID",
                    "file_unique_id": "AQADag",
                    "width": 90,
                    "height": 90,
                }
            ],
        }
        if caption:
            message["caption"] = caption
        return self.push_update({"message": message})

    # ---- plumbing -------------------------------------------------------------------------

    def _notify(self) -> None:
        # One Event per "generation": setting it wakes every waiter, who re-checks its predicate.
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_until(self, predicate: Callable[[], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    def _next_message_id(self, chat_id: int | str) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _user(
        self, user_id: int, first_name: str, last_name: str | None, username: str | None
    ) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = "es"
        return user

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Wisp Bot", "username": "wisp_bot"}

    def _chat(self, chat_id: int | str) -> dict[str, Any]:
        if isinstance(chat_id, int) and chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Ana"}
        is_forum = chat_id == self.agents_chat_id
        return {"id": chat_id, "type": "supergroup", "title": "Agentes", "is_forum": is_forum}

    def _user_message(
        self, chat_id: int, first_name: str, last_name: str | None, username: str | None
    ) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "private", "first_name": first_name}
        if last_name:
            chat["last_name"] = last_name
        return {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": self._user(chat_id, first_name, last_name, username),
        }

    async def _params(self, request: web.Request) -> dict[str, Any]:
        # aiogram posts forms (urlencoded, or multipart with files); other clients post JSON.
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                params[key] = value if isinstance(value, str) else "<file>"
        for key in ("reply_markup", "allowed_updates", "commands", "entities"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    def _fault_for(self, method: str, params: dict[str, Any]) -> Fault | None:
        chat = _chat_id(params["chat_id"]) if "chat_id" in params else None
        thread = int(params.get("message_thread_id") or 0) or None
        for fault in self._faults:
            if fault.method != method or fault.remaining == 0:
                continue
            if fault.chat_id is not None and fault.chat_id != chat:
                continue
            if fault.thread_id is not None and fault.thread_id != thread:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault
        return None

    async def webhook_reply(self, body: str | bytes) -> None:
        """Run the method a bot put in its answer to a webhook call, as Telegram does (nothing
        happens for an answer without one; its result and errors reach nobody)."""
        try:
            params = json.loads(body or b"null")
        except ValueError:
            return
        if not isinstance(params, dict) or not isinstance(params.get("method"), str):
            return
        method = params.pop("method")
        call = Call(method=method, params=params, at=time.monotonic(), content_type="webhook")
        self.calls.append(call)
        handler = self._handlers().get(method)
        try:
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            await handler(params)
        except _ApiError as err:
            call.error_code = err.code
        self._notify()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except (ValueError, json.JSONDecodeError):
            return _error(400, "Bad Request: can't parse request")
        call = Call(
            method=method, params=params, at=time.monotonic(), content_type=request.content_type
        )
        self.calls.append(call)
        self._notify()  # wakes wait_for_calls even while this call parks (long polling)
        try:
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            fault = self._fault_for(method, params)
            if fault is not None:
                raise _ApiError(fault.error_code, fault.description, fault.retry_after)
            flood = self._flood_wait(method, params)
            if flood is not None:
                self.flood_refusals += 1
                raise _ApiError(429, _DESCRIPTIONS[429].format(retry_after=flood), flood)
            handler = self._handlers().get(method)
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            result = await handler(params)
        except _ApiError as err:
            call.error_code = err.code
            self._notify()
            return _error(err.code, err.description, err.retry_after)
        self._notify()
        return web.json_response({"ok": True, "result": result})

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "copyMessage": self._copy_message,
            "forwardMessage": self._forward_message,
            "sendPhoto": lambda params: self._send_file("sendPhoto", params),
            "sendDocument": lambda params: self._send_file("sendDocument", params),
            "editMessageReplyMarkup": self._edit_markup,
            "answerCallbackQuery": self._answer_callback,
            "createForumTopic": self._create_topic,
            "closeForumTopic": self._close_topic,
            "reopenForumTopic": self._reopen_topic,
            "editForumTopic": self._edit_topic,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._webhook_info,
            "setMyCommands": self._set_commands,
            "sendChatAction": self._chat_action,
            "getFile": self._get_file,
        }

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        me = self._bot_user()
        me.update(can_join_groups=True, can_read_all_group_messages=False)
        me["supports_inline_queries"] = False
        return me

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook.get("url"):
            msg = "Conflict: can't use getUpdates method while webhook is active"
            raise _ApiError(409, msg + "; use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        allowed = params.get("allowed_updates") or []
        if offset:
            # Everything below the offset is confirmed and forgotten, as Telegram does.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            self._notify()
        if allowed:
            # Telegram drops update types the bot did not ask for.
            self._updates = [u for u in self._updates if set(u) - {"update_id"} <= set(allowed)]
        with contextlib.suppress(TimeoutError):
            await self._wait_until(lambda: bool(self._updates) or self._closing, timeout)
        return self._updates[:limit]

    def _record(self, method: str, params: dict[str, Any], text: str | None) -> dict[str, Any]:
        chat = _chat_id(params.get("chat_id", ""))
        if chat == "" or (isinstance(chat, int) and chat == 0):
            raise _ApiError(400, "Bad Request: chat not found")
        thread = params.get("message_thread_id")
        if thread is not None:
            thread = int(thread)
            if thread not in self.topics and chat == self.agents_chat_id:
                raise _ApiError(400, "Bad Request: message thread not found")
        markup = params.get("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        message_id = self._next_message_id(chat)
        from_chat = params.get("from_chat_id")
        source = params.get("message_id")
        self.messages.append(
            Sent(
                method=method,
                chat_id=chat,
                message_id=message_id,
                text=text,
                reply_markup=markup,
                message_thread_id=thread,
                at=time.monotonic(),
                parse_mode=params.get("parse_mode"),
                from_chat_id=_chat_id(from_chat) if from_chat is not None else None,
                source_message_id=int(source) if source is not None else None,
            )
        )
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat),
            "from": self._bot_user(),
        }
        if text is not None:
            message["text"] = text
        if markup:
            message["reply_markup"] = markup
        if thread is not None:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
        return message

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("text") or "")
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        return self._record("sendMessage", params, text)

    async def _copy_message(self, params: dict[str, Any]) -> dict[str, Any]:
        if "from_chat_id" not in params or "message_id" not in params:
            raise _ApiError(400, "Bad Request: message to copy not found")
        message = self._record("copyMessage", params, params.get("caption"))
        return {"message_id": message["message_id"]}

    async def _forward_message(self, params: dict[str, Any]) -> dict[str, Any]:
        if "from_chat_id" not in params or "message_id" not in params:
            raise _ApiError(400, "Bad Request: message to forward not found")
        return self._record("forwardMessage", params, None)

    async def _send_file(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._record(method, params, params.get("caption"))

    async def _edit_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            return True
        chat = _chat_id(params.get("chat_id", ""))
        message_id = int(params.get("message_id") or 0)
        for message in self.sent(chat):
            if message.message_id == message_id:
                message.reply_markup = params.get("reply_markup")
                return {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": self._chat(chat),
                    "text": message.text or "…",
                }
        raise _ApiError(400, "Bad Request: message to edit not found")

    async def _answer_callback(self, params: dict[str, Any]) -> bool:
        self.answered_callbacks.append(params)
        return True

    def _topic(self, params: dict[str, Any]) -> Topic:
        thread = int(params.get("message_thread_id") or 0)
        topic = self.topics.get(thread)
        if topic is None or topic.chat_id != _chat_id(params.get("chat_id", "")):
            raise _ApiError(400, "Bad Request: TOPIC_ID_INVALID")
        return topic

    async def _create_topic(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("name") or "")
        if not 1 <= len(name) <= 128:
            raise _ApiError(400, "Bad Request: TOPIC_TITLE_INVALID")
        chat = _chat_id(params.get("chat_id", ""))
        if chat != self.agents_chat_id:
            raise _ApiError(400, "Bad Request: the chat is not a forum")
        thread = next(self._thread_ids)
        self.topics[thread] = Topic(chat_id=chat, thread_id=thread, name=name)
        return {"message_thread_id": thread, "name": name, "icon_color": 7322096}

    async def _close_topic(self, params: dict[str, Any]) -> bool:
        topic = self._topic(params)
        if topic.closed:
            raise _ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = True
        return True

    async def _reopen_topic(self, params: dict[str, Any]) -> bool:
        topic = self._topic(params)
        if not topic.closed:
            raise _ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = False
        return True

    async def _edit_topic(self, params: dict[str, Any]) -> bool:
        topic = self._topic(params)
        if "name" in params:
            topic.edits.append(topic.name)
            topic.name = str(params["name"])
        return True

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {
            "url": str(params.get("url") or ""),
            "secret_token": params.get("secret_token"),
            "allowed_updates": params.get("allowed_updates"),
        }
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._updates.clear()
        return True

    async def _webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _set_commands(self, params: dict[str, Any]) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    async def _chat_action(self, params: dict[str, Any]) -> bool:
        self.chat_actions.append((_chat_id(params.get("chat_id", "")), str(params.get("action"))))
        return True

    async def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params.get("file_id", ""))
        if file_id not in self.files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        path = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(self.downloads.get(path, b"")),
            "file_path": path,
        }

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        content = self.downloads.get(request.match_info["path"])
        if content is None:
            return web.Response(status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    # ---- control routes for a fake run as a subprocess ------------------------------------

    _CONTROL = frozenset(
        {"push_update", "user_text", "user_press", "user_contact", "user_sticker", "user_photo"}
        | {"agent_text", "agent_photo", "fail", "block", "flood_limit"}
    )

    async def _control(self, request: web.Request) -> web.Response:
        helper = request.match_info["helper"]
        if helper not in self._CONTROL:
            raise web.HTTPNotFound(text=f"no helper {helper!r}")
        try:
            kwargs = await request.json()
            result = getattr(self, helper)(**kwargs)
        except (ValueError, TypeError) as err:
            raise web.HTTPBadRequest(text=str(err)) from err
        return web.json_response({"ok": True, "result": result})

    async def _control_wait(self, request: web.Request) -> web.Response:
        """``GET /_fake/wait/{chat_id}?n=3&timeout=5``: block until n messages, then list them."""
        try:
            n = int(request.query.get("n", "1"))
            seconds = float(request.query.get("timeout", "5"))
        except ValueError as err:
            raise web.HTTPBadRequest(text=str(err)) from err
        try:
            await self.wait_for_messages(request.match_info["chat_id"], n, seconds)
        except TimeoutError as err:
            raise web.HTTPRequestTimeout(text=f"fewer than {n} messages") from err
        return await self._control_sent(request)

    async def _control_sent(self, request: web.Request) -> web.Response:
        sent = self.sent(request.match_info["chat_id"])
        rows = [
            {
                "message_id": m.message_id,
                "method": m.method,
                "text": m.text,
                "reply_markup": m.reply_markup,
                "message_thread_id": m.message_thread_id,
            }
            for m in sent
        ]
        return web.json_response(rows)

    async def _control_calls(self, request: web.Request) -> web.Response:
        rows = [
            {"method": c.method, "params": c.params, "error_code": c.error_code} for c in self.calls
        ]
        return web.json_response(rows, dumps=lambda obj: json.dumps(obj, default=str))

    async def _on_shutdown(self, app: web.Application) -> None:
        # Release parked long polls so the server stops at once.
        self._closing = True
        self._notify()


def _error(code: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=code)


@contextlib.asynccontextmanager
async def running_fake_telegram(
    token: str = DEFAULT_TOKEN,
    *,
    agents_chat_id: int = DEFAULT_AGENTS_CHAT_ID,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[FakeTelegram]:
    """Serve a fresh fake on loopback (a free port unless given) for the duration of the block."""
    fake = FakeTelegram(token, agents_chat_id=agents_chat_id)
    # No access log: request paths carry the bot token.
    runner = web.AppRunner(fake.app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    fake.base_url = f"http://{host}:{bound}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Serve the fake until interrupted (the end-to-end suite runs it as a subprocess)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--agents-chat-id", type=int, default=DEFAULT_AGENTS_CHAT_ID)
    args = parser.parse_args(argv)
    fake = FakeTelegram(args.token, agents_chat_id=args.agents_chat_id)
    fake.base_url = f"http://{args.host}:{args.port}"
    web.run_app(
        fake.app,
        host=args.host,
        port=args.port,
        print=lambda _: print(f"fake telegram api on {fake.base_url}", flush=True),
        shutdown_timeout=1.0,
        access_log=None,  # request paths carry the bot token
    )


if __name__ == "__main__":
    main()
