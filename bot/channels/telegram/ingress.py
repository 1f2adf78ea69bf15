"""Telegram updates in: the webhook (``POST /webhooks/telegram``) and long polling.

Both read an update's JSON with the one parser (``parse.parse_update``) and hand it to
``dispatch_update``: a customer's event to the runtime's sink, an agent's topic message to the
agents' sink, a button press answered alongside. An update is confirmed to Telegram (the
webhook's answer, the next getUpdates) only once its event has its place in its conversation's
order in the store, so a process killed from then on loses none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from aiogram.exceptions import ClientDecodeError, TelegramAPIError, TelegramUnauthorizedError
from aiogram.types import Update
from aiohttp import web
from pydantic import SecretStr

from bot.channels.base import (
    AgentSink,
    InboundSink,
    PlacingSink,
    placed_in_time,
    placed_within,
    settle,
    settle_when_done,
)
from bot.channels.telegram.channel import TelegramChannel
from bot.channels.telegram.parse import (
    ALLOWED_UPDATES,
    BadUpdate,
    QuickUpdate,
    as_int,
    callback_query_id,
    parse_update,
    update_to_agent_message,
    update_to_inbound,
)
from bot.concurrency import retry_delay
from flows.types import Inbound

log = logging.getLogger("bot.channels.telegram")

CallbackSink = Callable[[str], Awaitable[None]]
MAX_FETCHES_UNPLACED = 3  # fetched again at most this many times while the store is unreachable
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)


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
                    await self.channel.api.post(
                        "getUpdates", {"offset": self.offset, "limit": 1, "timeout": 0}
                    )

    async def _run(self) -> None:
        bot = self.channel.bot
        failures = 0
        request_timeout = bot.session.timeout + self.timeout
        while not self._stopping:
            try:
                raw = await self._fetch(request_timeout)
            except TelegramUnauthorizedError:
                log.critical("telegram rejected the bot token; polling stopped")
                return
            except Exception as err:
                # Whatever went wrong (network, 5xx, 409 while a webhook is set, a bad body),
                # polling must outlive it; the backoff keeps a persistent fault from spinning.
                failures += 1
                delay = retry_delay(min(failures, 6), self.retry_backoff, 60.0)
                log.warning(
                    "telegram getUpdates failed",
                    extra={"error": type(err).__name__, "delay": delay},
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            updates = self._parse(raw)
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

    async def _fetch(self, seconds: float) -> list[Any]:
        """One getUpdates (long poll) as raw JSON: the updates are parsed by ``_parse``."""
        payload: dict[str, Any] = {
            "timeout": self.timeout,
            "allowed_updates": list(ALLOWED_UPDATES),
        }
        if self.offset is not None:
            payload["offset"] = self.offset
        raw = await self.channel.api.post("getUpdates", payload, seconds=seconds)
        if not isinstance(raw, list):
            msg = "Failed to deserialize object"
            raise ClientDecodeError(msg, ValueError("not a list of updates"), raw)
        return raw

    def _parse(self, raw: list[Any]) -> list[Update | QuickUpdate]:
        """The updates of a getUpdates answer, with the webhook's parser; one that is no update
        is skipped (counted and logged by id) and confirmed with the rest."""
        updates: list[Update | QuickUpdate] = []
        for item in raw:
            update_id = as_int(item.get("update_id")) if isinstance(item, dict) else None
            if update_id is None:
                self.handler_errors += 1
                log.error("telegram getUpdates gave something that is no update")
                continue
            try:
                updates.append(parse_update(item, self.channel.bot))
            except BadUpdate:
                self.handler_errors += 1
                self.offset = max(self.offset or 0, update_id + 1)
                log.exception("telegram update failed", extra={"update_id": update_id})
        return updates

    async def _confirm_only_placed(
        self, updates: list[Update | QuickUpdate], batch: list[asyncio.Future[bool]]
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

    async def _handle(self, update: Update | QuickUpdate, placed: asyncio.Future[bool]) -> bool:
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


class TelegramWebhook:
    """``POST /webhooks/telegram``: check the secret token, parse, answer once the update has its
    place, handle it in the background (``spawn``: the service's, so its stop waits for it)."""

    def __init__(
        self,
        channel: TelegramChannel,
        secret: SecretStr,
        *,
        placing: PlacingSink,
        on_agent: AgentSink | None,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        place_timeout: float,
    ) -> None:
        self.channel = channel
        self.secret = secret
        self.placing = placing
        self.on_agent = on_agent
        self.spawn = spawn
        self.place_timeout = place_timeout

    async def post(self, request: web.Request) -> web.Response:
        """The webhook call: 403 without the secret token, 400 for what is no update, 503
        when the update could not take its place (Telegram sends it again), else 200."""
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.get_secret_value().encode()):
            return forbidden()
        try:
            body = orjson.loads(await request.read())
        except ValueError:  # not JSON, or not UTF-8
            return web.Response(status=400, text="malformed JSON")
        if not isinstance(body, dict):
            return web.Response(status=400, text="expected a JSON object")
        try:
            # Parsed before answering, so a body that is no update is a 400, not a silent 200.
            update = parse_update(body, self.channel.bot)
        except BadUpdate as err:
            log.warning("telegram webhook body is not an update", extra={"error": str(err)})
            return web.Response(status=400, text="not a Telegram update")
        press = callback_query_id(update)
        # Answered once the update has its place in its conversation's order (shared by every
        # process through Redis): Telegram posts a chat's next update only after this answer,
        # to whichever process, and that one is then handled after this one.
        placed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def on_inbound(inbound: Inbound) -> None:
            await self.placing(inbound, functools.partial(settle, placed, True))

        task = self.spawn(
            dispatch_update(
                update, self.channel, on_inbound, self.on_agent, answered=press is not None
            )
        )
        # An agent's message or junk is done when its task is; a task that failed before the
        # update had its place (the store unreachable) leaves it unplaced.
        task.add_done_callback(functools.partial(settle_when_done, placed))
        if not await placed_in_time(placed, self.place_timeout):
            # Not taken (Redis unreachable or too slow): Telegram sends the update again later.
            # Should this process still open its turn meanwhile, the copy is a duplicate.
            log.warning("telegram update not accepted: the session store did not answer")
            return web.Response(status=503, text="try again")
        if press is None:
            return web.Response(text="ok")
        # A button press is answered in the webhook's own answer (Telegram runs the method it
        # names): the button's spinner stops at once, without a Bot API call of its own.
        return web.json_response({"method": "answerCallbackQuery", "callback_query_id": press})


def forbidden() -> web.Response:
    """The answer to a webhook call with a missing or wrong secret token."""
    log.warning("telegram webhook call with a missing or wrong secret token")
    return web.Response(status=403, text="forbidden")
