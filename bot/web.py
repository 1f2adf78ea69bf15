"""The service (``python -m bot run``): the aiohttp app, the channels, and their lifecycle.

Routes: ``GET /healthz`` (the process serves), ``GET /readyz`` (Redis and WispHub answer),
``GET /metrics`` (Prometheus), ``POST /webhooks/telegram`` (secret token checked),
``GET|POST /webhooks/whatsapp`` (verify token; signature checked on the raw body).
Telegram runs by long polling when ``TELEGRAM_WEBHOOK_URL`` is empty, else by webhook.
Webhook calls are answered at once and handled in the background; per-conversation order comes
from the engine's FIFO, taken before anything else is awaited. SIGTERM drains in-flight
messages, saves, and exits 0: from the signal on, webhook calls are answered 503 (Telegram and
Meta send them again, to the next process), and the clients are closed only once no turn that
uses them runs any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import hmac
import logging
import mimetypes
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import metrics
from bot.agents_telegram import TelegramAgents
from bot.channel_health import SendHealth
from bot.channels.base import (
    AgentMessage,
    ChannelAdapter,
    DeliveryError,
    WindowClosed,
    placed_within,
    settle,
    settle_when_done,
)
from bot.channels.telegram import (
    BadUpdate,
    TelegramChannel,
    TelegramPolling,
    callback_query_id,
    dispatch_update,
    make_bot,
    parse_update,
)
from bot.channels.whatsapp import WhatsAppChannel, WhatsAppWebhook, takes_caption
from bot.engine import LOCK_LEASE_SECONDS, Engine
from bot.handoff import NoAgents
from bot.http_guard import GuardedSite, body_within, quiet_bad_requests, server_options
from bot.logs import log_key, setup_logging
from bot.relay import Relay
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings, SettingsError, load_settings, require
from bot.startup import check_wisphub, listen, telegram_problem
from bot.store import StoreError, TurnStart
from flows.ports import HandoffError, HandoffPort
from flows.texts import Texts
from flows.types import Channel, ConvKey, Inbound, Outbound
from integrations.wisphub.errors import WispHubError

log = logging.getLogger(__name__)

SWEEP_SECONDS = 15.0
# A turn is a dead process's when that process's key lapsed while Redis was up at least this
# long (every live process renews its key every third of a lease, a restarted Redis included).
ORPHAN_SECONDS = 2 * LOCK_LEASE_SECONDS
DRAIN_SECONDS = 22.0  # in all, for the messages in flight at stop
POLLING_DRAIN_SECONDS = 20.0  # fetched updates still unhandled then are kept in the inbox
CLOSE_SECONDS = 3.0  # for closing the server, then the clients, after the drain
LATE_TURN_SECONDS = 1.0  # a turn started while the server closed (rare): then kept in the inbox
STOP_REPORT_SECONDS = 27.0  # a stop still running then logs what it waits for
PLACE_WAIT_SECONDS = 5.0  # a webhook update's wait for its place in the order before the answer
# Polling: how long a fetched batch waits for its updates' places before the next getUpdates
# confirms it (the engine waits out a store outage for 20 s; what is still unplaced then is
# fetched again).
POLL_PLACE_SECONDS = 25.0
READY_CACHE_SECONDS = 5.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)


# What Telegram stores each kind of attachment as: (MIME family, MIME to use when the file path
# does not tell), for the upload to WhatsApp.
_TELEGRAM_FORMATS = {
    "photo": ("image/", "image/jpeg"),
    "sticker": ("image/webp", "image/webp"),
    "voice": ("audio/", "audio/ogg"),
    "audio": ("audio/", "audio/mpeg"),
    "video": ("video/", "video/mp4"),
    "video_note": ("video/", "video/mp4"),
    "animation": ("video/", "video/mp4"),
}


class Service:
    """One process of wispbot: channels in, engine, replies out."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channels: dict[Channel, ChannelAdapter] = {}
        self.telegram: TelegramChannel | None = None
        self.whatsapp: WhatsAppChannel | None = None
        self.whatsapp_hook: WhatsAppWebhook | None = None
        self.polling: TelegramPolling | None = None
        self.runtime: Runtime | None = None
        self.handoff: HandoffPort = NoAgents()
        # The agents' group itself (the handoff port may be the relay in front of it): who may
        # act in a topic is its call, whatever port relays.
        self.agents: TelegramAgents | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Every task running a customer's or an agent's turn, whichever channel started it
        # (polling, webhooks, WhatsApp): the stop waits for them before closing any client.
        self._turns: set[asyncio.Task[Any]] = set()
        self.stopping = False  # SIGTERM came: webhook calls are refused (503)
        self._ready: tuple[float, bool, dict[str, bool]] = (0.0, False, {})
        self._stack = AsyncExitStack()
        self.notes = Texts(settings.bot.bot_language)
        self.health = SendHealth(settings.bot.ready_send_window)

    @property
    def engine(self) -> Engine:
        """The engine (after start)."""
        assert self.runtime is not None
        return self.runtime.engine

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> web.AppRunner:
        """Build everything, serve HTTP, start the Telegram channel; return the app runner."""
        tg = self.settings.telegram
        if tg.webhook_url is not None:
            require(tg.bot_token, "TELEGRAM_BOT_TOKEN")
            require(tg.webhook_secret, "TELEGRAM_WEBHOOK_SECRET")
        if tg.bot_token is not None:
            bot = make_bot(tg.bot_token, str(tg.api_url))
            self._stack.push_async_callback(bot.session.close)
            self.telegram = TelegramChannel(
                bot,
                agents_chat_id=tg.agents_chat_id,
                per_chat_interval=tg.chat_interval,
                global_rate=tg.global_rate,
                # TELEGRAM_CHAT_INTERVAL=0 means "no per-chat limit" (a local run against a
                # fake): the agents' group is a chat too, else its 20 a minute still paces it.
                group_per_minute=20 if tg.chat_interval > 0 else 0,
            )
            # Closed before the bot's session (the stack unwinds last in, first out).
            self._stack.push_async_callback(self.telegram.aclose)
            self.telegram.on_outcome = functools.partial(self.health.record, "telegram")
            self.channels["telegram"] = self.telegram
            if tg.agents_chat_id is not None:
                self.handoff = self.agents = TelegramAgents(
                    self.telegram, self.settings.bot.bot_language, agent_ids=tg.agent_ids
                )
        wa = self.settings.whatsapp
        if wa.enabled:
            self.whatsapp = WhatsAppChannel(
                wa,
                list_button=self.notes("opt.choose"),
                more_label=self.notes("opt.more"),
                on_outcome=functools.partial(self.health.record, "whatsapp"),
            )
            self._stack.push_async_callback(self.whatsapp.aclose)
            self.channels["whatsapp"] = self.whatsapp
            if isinstance(self.handoff, TelegramAgents):
                # A WhatsApp customer's photo or document reaches the topic as a file.
                self.handoff.media_sources["whatsapp"] = self.whatsapp.fetch_media
            self.whatsapp_hook = WhatsAppWebhook(
                wa,
                self.on_inbound,
                on_mark_read=self.whatsapp.mark_read,
                channel=self.whatsapp,
                placing=self.on_inbound,
                place_timeout=PLACE_WAIT_SECONDS,
            )
        if not self.channels:
            log.warning(
                "no channel configured: set TELEGRAM_BOT_TOKEN and/or the WHATSAPP_* settings"
            )
        self.runtime = await self._stack.enter_async_context(
            open_runtime(self.settings, self.handoff)
        )
        # One look at WispHub before HTTP serves: a refused key is one clear line at start, and
        # the probe is over before any traffic (nothing that counts WispHub calls sees it).
        await check_wisphub(self.runtime.wisphub)

        if isinstance(self.handoff, TelegramAgents):
            self._start_relay(self.handoff, self.runtime)

        # A request still running at stop gets a few seconds, not aiohttp's default minute.
        conf = self.settings.bot
        quiet_bad_requests()
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=CLOSE_SECONDS,
            **server_options(conf.http_read_timeout),
        )
        await runner.setup()
        site = GuardedSite(
            runner, conf.http_host, conf.http_port, max_connections=conf.http_max_connections
        )
        await listen(site, self.settings)
        log.info("http serving", extra={"addresses": str(runner.addresses)})

        # Events a stopped process kept go first, before anything new is fetched; then the
        # turns of a process that died (in their places: they still go first).
        await self._resume_inbox()
        await self._resume_orphans()
        if self.telegram is not None:
            if tg.webhook_url is None:
                await self.telegram.bot.delete_webhook(drop_pending_updates=False)
                self.polling = TelegramPolling(
                    self.telegram,
                    on_inbound=self.on_inbound,
                    on_agent=self.on_agent,
                    placing=self.on_inbound,
                    drain_timeout=POLLING_DRAIN_SECONDS,
                    place_timeout=POLL_PLACE_SECONDS,
                )
                await self.polling.start()
                log.info("telegram long polling started")
            else:
                assert tg.webhook_secret is not None
                await self.telegram.bot.set_webhook(
                    str(tg.webhook_url),
                    secret_token=tg.webhook_secret.get_secret_value(),
                    allowed_updates=["message", "callback_query"],
                )
                log.info("telegram webhook registered")
        self._spawn(self._sweeper(), name="sweeper")
        return runner

    def refuse_new(self) -> None:
        """From now on (SIGTERM), webhook calls are answered 503: Telegram and Meta send them
        again, to the next process, instead of handing this one work it must cut short."""
        self.stopping = True

    async def stop(self, runner: web.AppRunner) -> None:
        """Drain: no new updates, in-flight ones finish and are saved, then close everything.

        The whole stop fits compose's 30 s grace period: messages get ``DRAIN_SECONDS`` in all
        (those still running then are cancelled, and their events kept in the inbox for the
        next process, while the store is still open); closing the server and the clients gets
        ``CLOSE_SECONDS`` each. No client is closed while a turn runs. Each step is logged with
        the seconds it took, and one that overruns logs where every task waits."""
        self.refuse_new()
        loop = asyncio.get_running_loop()
        started = loop.time()

        def done(step: str) -> None:
            log.info(step, extra={"seconds": round(loop.time() - started, 3)})

        def left() -> float:
            return max(0.5, started + DRAIN_SECONDS - loop.time())

        if self.polling is not None:
            await self.polling.stop()
            done("stop: fetched updates handled or kept")
        for task in [t for t in self._tasks if t.get_name() in ("sweeper", "relay")]:
            task.cancel()  # what the relay had not sent stays in its outbox
        await runner.shutdown()
        if self.whatsapp_hook is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left()):
                    await self.whatsapp_hook.drain()
        await self._drain(started + DRAIN_SECONDS)
        done("stop: in-flight messages done")
        await self._bounded(runner.cleanup(), "stop: http closed", done)
        # A call the server was still reading at the signal may have started a turn since.
        await self._drain(loop.time() + LATE_TURN_SECONDS)
        await self._bounded(self.close(), "stop: clients closed", done)

    def _running(self) -> set[asyncio.Task[Any]]:
        return {t for t in self._tasks | self._turns if not t.done()}

    async def _drain(self, deadline: float) -> None:
        """Wait for every turn, including those started meanwhile, until ``deadline``; then
        cancel what still runs (its event is kept in the inbox) and wait for that, bounded."""
        loop = asyncio.get_running_loop()
        while (running := self._running()) and loop.time() < deadline:
            await asyncio.wait(running, timeout=max(0.5, deadline - loop.time()))
        if running:
            log.warning(
                "stop: messages cut short, kept for the next process",
                extra={"count": len(running)},
            )
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=CLOSE_SECONDS)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """The current task runs a turn until the block ends (the stop waits for it)."""
        task = asyncio.current_task()
        if task is not None:
            self._turns.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._turns.discard(task)

    def _start_relay(self, agents: TelegramAgents, runtime: Runtime) -> None:
        """Relays to the agents' group go through a durable outbox per topic, sent by a
        worker outside the conversation locks (see ``bot/relay.py``)."""
        engine = runtime.engine

        async def tell(thread: int) -> None:
            await engine.tell(thread, "agents_slow", self.deliver)

        relay = Relay.build(
            agents,
            runtime.store,
            tell,
            slow_after=self.settings.bot.relay_slow_seconds,
            clock=engine.ctx.clock,
        )
        self.handoff = runtime.handoff = engine.ctx.handoff = relay.port
        self._spawn(relay.worker.run(), name="relay")

    async def _bounded(
        self, step: Coroutine[Any, Any, None], name: str, done: Callable[[str], None]
    ) -> None:
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await step
        except TimeoutError:
            log.warning("stop: step given up", extra={"step": name, "seconds": CLOSE_SECONDS})
            _report_stuck_stop()
        else:
            done(name)

    async def close(self) -> None:
        """Close clients and pools (also after a failed start)."""
        await self._stack.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str = "update") -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            err = task.exception()
            log.error("background task failed", extra={"task": task.get_name(), "error": repr(err)})

    async def _resume_inbox(self) -> None:
        """Handle the events a previous process stopped before handling (in their order)."""
        try:
            kept = await self.engine.ctx.store.pop_inbox()
        except StoreError:
            log.exception("could not read the kept events")
            return
        self._handle_again(kept, "handling an event kept by a stopped process", journal=True)

    async def _resume_orphans(self) -> None:
        """Handle again the turns a dead process left unfinished (the store's journal)."""
        try:
            orphans = await self.engine.ctx.store.take_orphans(ORPHAN_SECONDS)
        except StoreError:
            log.warning("could not read the journal of turns in flight")
            return
        metrics.RECOVERED_TURNS.inc(len(orphans))
        why = "handling again a message whose process died"
        for orphan in orphans:
            # Taken over in its place in line (in its order), or, with none left, as new; a
            # second try of the latter is not journalled (a message that kills its process is
            # not tried forever; one taken over keeps its count of tries in the journal).
            inbound = Inbound.from_json(orphan.event)
            log.warning(why, extra={"conv": str(inbound.key)})
            self._spawn(self.on_inbound(inbound, journal=False, resumed=orphan.start))

    def _handle_again(self, events: list[str], why: str, *, journal: bool) -> None:
        for raw in events:
            inbound = Inbound.from_json(raw)
            log.warning(why, extra={"conv": str(inbound.key)})
            self._spawn(self.on_inbound(inbound, journal=journal))

    async def _sweeper(self) -> None:
        interval = min(SWEEP_SECONDS, self.settings.bot.handoff_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            await self._resume_orphans()
            try:
                await self.engine.sweep(self.deliver)
            except Exception:
                log.exception("sweep failed")

    # -- events -----------------------------------------------------------------------------
    async def on_inbound(
        self,
        inbound: Inbound,
        placed: Callable[[], None] | None = None,
        *,
        journal: bool = True,
        resumed: TurnStart | None = None,
    ) -> None:
        """A customer event from any channel (``placed``, ``journal``, ``resumed``: see
        ``Engine.handle``)."""
        started = time.perf_counter()
        try:
            with self._turn():
                await self.engine.handle(
                    inbound, self.deliver, placed=placed, journal=journal, resumed=resumed
                )
        except asyncio.CancelledError:
            # Stopping with this event not yet handled: keep it for the next process (a turn
            # that had saved its replies is a duplicate there and only its outbox is sent).
            with contextlib.suppress(StoreError):
                await self.engine.ctx.store.push_inbox(inbound.to_json())
                log.info("event kept for the next process", extra={"conv": str(inbound.key)})
            raise
        metrics.labelled(metrics.REPLY_LATENCY, inbound.key.channel).observe(
            time.perf_counter() - started
        )

    async def on_agent(self, msg: AgentMessage) -> None:
        """An agent's message in a topic (the engine keeps a topic's messages in order)."""
        if self.agents is not None and not await self.agents.admit(msg):
            return  # not on TELEGRAM_AGENT_IDS: told so in the topic

        async def deliver(replies: list[Outbound]) -> list[Outbound]:
            replies = [self._from_topic(reply) for reply in replies]
            undelivered, problem = await self._send_in_order(replies)
            if undelivered:
                closed = isinstance(problem, WindowClosed)
                reason = self.notes("agents.window_closed" if closed else "agents.refused")
                with contextlib.suppress(HandoffError):
                    await self.handoff.notify(
                        msg.thread_id, self.notes("agents.not_delivered", reason=reason)
                    )
            # An agent's relay that failed is reported in the topic, not retried later.
            return []

        with self._turn():
            await self.engine.from_agent(msg, deliver)

    def _from_topic(self, reply: Outbound) -> Outbound:
        """An agent's attachment is a message of the agents' group: name it as the copy's source.

        The engine relays it without a source (it knows no channel), and a copy without one
        is refused, so agents' photos and files never reached Telegram customers.
        """
        agents = self.telegram.agents_chat_id if self.telegram is not None else None
        if reply.media is None or reply.source_key is not None or agents is None:
            return reply
        return dataclasses.replace(reply, source_key=ConvKey("telegram", str(agents)))

    def _agent_file_for_whatsapp(self, reply: Outbound) -> bool:
        """Whether the reply is an agent's attachment (with a file to fetch) for WhatsApp."""
        return (
            reply.key.channel == "whatsapp"
            and reply.media is not None
            and bool(reply.media.file_id)
            and reply.source_key is not None
            and reply.source_key.channel == "telegram"
            and self.telegram is not None
            and self.whatsapp is not None
        )

    async def _send_agent_file(self, reply: Outbound) -> None:
        """An agent's attachment to a WhatsApp customer: a Telegram copy cannot reach WhatsApp,
        so the file is downloaded from Telegram, uploaded to Graph and sent with its caption."""
        assert self.telegram is not None
        assert self.whatsapp is not None
        assert reply.media is not None
        media, chat = reply.media, reply.key.chat_id
        if self.whatsapp.window_known_closed(chat):  # no download for a doomed send
            msg = f"{reply.key}: the customer has not written for 24 hours"
            raise WindowClosed(msg)
        data, mime = await self.telegram.download_file(media.file_id)
        family, usual = _TELEGRAM_FORMATS.get(media.type, ("", mime))
        if not mime.startswith(family):
            mime = usual  # the file path did not tell: the format Telegram stores it in
        extension = mimetypes.guess_extension(mime) or ""
        media_id = await self.whatsapp.upload_media(data, mime, f"{media.type}{extension}")
        await self.whatsapp.send_media(chat, media_id, media.type, media.caption)
        # The engine relays the caption as the text too: send only what the caption lacks (all
        # of it for a voice note or a sticker, which show no caption on WhatsApp).
        same = takes_caption(media.type) and reply.text.strip() == media.caption.strip()
        text = "" if same else reply.text
        if text.strip() or reply.options:
            await self.whatsapp.send(Outbound(reply.key, text, reply.options))

    async def deliver(self, replies: list[Outbound]) -> list[Outbound]:
        """Send in order; return what could not be sent (it stays in the outbox)."""
        undelivered, _ = await self._send_in_order(replies)
        return undelivered

    async def _send_in_order(
        self, replies: list[Outbound]
    ) -> tuple[list[Outbound], DeliveryError | None]:
        """Send in order; what could not be sent, and why (per call: deliveries of several
        conversations run at once, so the reason must not live on the service)."""
        for index, reply in enumerate(replies):
            channel = self.channels.get(reply.key.channel)
            if channel is None:
                log.error("no channel to deliver to", extra={"conv": str(reply.key)})
                metrics.DELIVERY_FAILURES.labels(reply.key.channel).inc()
                continue
            try:
                if self._agent_file_for_whatsapp(reply):
                    await self._send_agent_file(reply)
                else:
                    await channel.send(reply)
            except WindowClosed as err:
                metrics.DELIVERY_FAILURES.labels(reply.key.channel).inc()
                return replies[index:], err
            except DeliveryError as err:
                metrics.DELIVERY_FAILURES.labels(reply.key.channel).inc()
                log.exception(
                    "reply not delivered, kept in the outbox", extra={"conv": str(reply.key)}
                )
                return replies[index:], err
            metrics.labelled(metrics.MESSAGES_OUT, reply.key.channel).inc()
        return [], None

    # -- HTTP -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(
            client_max_size=1024 * 1024,
            middlewares=[body_within(self.settings.bot.http_read_timeout)],
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/webhooks/telegram", self.telegram_webhook)
        if self.whatsapp_hook is not None:
            app.router.add_get("/webhooks/whatsapp", self.whatsapp_hook.get)
            app.router.add_post("/webhooks/whatsapp", self.whatsapp_webhook)
        return app

    def _refused(self, channel: str) -> web.Response:
        log.info("webhook call refused: stopping", extra={"channel": channel})
        return web.Response(status=503, text="stopping, try again")

    async def whatsapp_webhook(self, request: web.Request) -> web.Response:
        """Meta's calls (signature checked by the hook); 503 once stopping."""
        if self.stopping:
            return self._refused("whatsapp")
        assert self.whatsapp_hook is not None
        return await self.whatsapp_hook.post(request)

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the process serves."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 only when Redis (if used) and WispHub answer (cached for a few seconds) and no
        channel failed every send of the last ``READY_SEND_WINDOW`` seconds (named false). 503
        once stopping: a load balancer sends no more work."""
        if self.stopping:
            return web.json_response({"ready": False, "stopping": True}, status=503)
        at, ok, checks = self._ready
        if time.monotonic() - at > READY_CACHE_SECONDS:
            checks = {
                "store": await self._check(self._store_ok()),
                "wisphub": await self._check(self._wisphub_ok()),
            }
            ok = all(checks.values())
            self._ready = (time.monotonic(), ok, checks)
        failing = self.health.failing()
        sending = {name: name not in failing for name in self.channels}
        ok = ok and not failing
        return web.json_response({"ready": ok, **checks, **sending}, status=200 if ok else 503)

    async def _check(self, probe: Awaitable[bool]) -> bool:
        try:
            async with asyncio.timeout(3):
                return await probe
        except (TimeoutError, WispHubError):
            return False

    async def _store_ok(self) -> bool:
        assert self.runtime is not None
        return await self.runtime.store.ping()

    async def _wisphub_ok(self) -> bool:
        assert self.runtime is not None
        await self.runtime.wisphub.ping_server()
        return True

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def telegram_webhook(self, request: web.Request) -> web.Response:
        """Check the secret token, answer at once, handle in the background; 503 once
        stopping."""
        if self.stopping:
            return self._refused("telegram")
        secret = self.settings.telegram.webhook_secret
        given = request.headers.get(SECRET_HEADER, "")
        if (
            self.telegram is None
            or secret is None
            or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
        ):
            log.warning("telegram webhook call with a missing or wrong secret token")
            return web.Response(status=403, text="forbidden")
        try:
            body = orjson.loads(await request.read())
        except ValueError:  # not JSON, or not UTF-8
            return web.Response(status=400, text="malformed JSON")
        if not isinstance(body, dict):
            return web.Response(status=400, text="expected a JSON object")
        try:
            # Parsed before answering, so a body that is no update is a 400, not a silent 200.
            update = parse_update(body, self.telegram)
        except BadUpdate as err:
            log.warning("telegram webhook body is not an update", extra={"error": str(err)})
            return web.Response(status=400, text="not a Telegram update")
        press = callback_query_id(update)
        # Answered once the update has its place in its conversation's order (shared by every
        # process through Redis): Telegram posts a chat's next update only after this answer,
        # to whichever process, and that one is then handled after this one.
        placed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def on_inbound(inbound: Inbound) -> None:
            await self.on_inbound(inbound, functools.partial(settle, placed, True))

        task = self._spawn(
            dispatch_update(
                update, self.telegram, on_inbound, self.on_agent, answered=press is not None
            )
        )
        # An agent's message or junk is done when its task is; a task that failed before the
        # update had its place (the store unreachable) leaves it unplaced.
        task.add_done_callback(functools.partial(settle_when_done, placed))
        if not (await placed_within([placed], PLACE_WAIT_SECONDS))[0]:
            # Not taken (Redis unreachable or too slow): Telegram sends the update again later.
            # Should this process still open its turn meanwhile, the copy is a duplicate.
            log.warning("telegram update not accepted: the session store did not answer")
            return web.Response(status=503, text="try again")
        if press is None:
            return web.Response(text="ok")
        # A button press is answered in the webhook's own answer (Telegram runs the method it
        # names): the button's spinner stops at once, without a Bot API call of its own.
        return web.json_response({"method": "answerCallbackQuery", "callback_query_id": press})


async def run_service() -> int:
    """``python -m bot run``: serve until SIGTERM/SIGINT, then drain and exit 0."""
    settings = load_settings()
    setup_logging(settings.bot.log_level, log_key(settings.log_secret))
    require(settings.wisphub.api_key, "WISPHUB_API_KEY")
    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        service.refuse_new()  # at once: a webhook call of the next loop turn is refused
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        runner = await service.start()
    except TelegramUnauthorizedError:
        await service.close()
        msg = "invalid setting TELEGRAM_BOT_TOKEN: Telegram rejected it"
        raise SettingsError(msg) from None
    except TelegramAPIError as err:  # unreachable, or the webhook refused: one line
        await service.close()
        raise telegram_problem(settings, err) from None
    except BaseException:
        await service.close()
        raise
    # What start-up built (modules, aiogram's models, clients, texts) lives as long as the
    # process: moved out of the collector's sight, a full collection no longer walks it on the
    # request path (the long pauses at the tail of reply latency).
    gc.freeze()
    log.info("wispbot running")
    await stop.wait()
    log.info("stopping: draining in-flight messages")
    report = loop.call_later(STOP_REPORT_SECONDS, _report_stuck_stop)
    try:
        await service.stop(runner)
    finally:
        report.cancel()
    log.info("stopped")
    return 0


def _report_stuck_stop() -> None:
    """A stop that overruns: log every task still running, where it waits (no locals)."""
    for task in asyncio.all_tasks():
        log.warning(
            "stop: still waiting on a task",
            extra={"task": task.get_name(), "at": " <- ".join(reversed(_awaiting(task)))},
        )


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines a task is suspended in, outermost first (file:line function),
    ending with what the innermost one awaits when that is no coroutine (a future, a sleep)."""
    where: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(where) < 40:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            where.append(type(awaited).__name__)
            break
        where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return where[-6:]
