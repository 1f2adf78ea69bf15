"""The service (``python -m bot run``): wiring the channels, the runtime and the HTTP app
(``bot/web.py``), the drain at stop and the recovery sweeps.

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
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from bot import metrics
from bot.channel_health import SendHealth
from bot.channels.base import (
    AgentMessage,
    ChannelAdapter,
    DeliveryError,
    WindowClosed,
    bubbles,
)
from bot.channels.telegram.bridge import MediaBridge, from_topic
from bot.channels.telegram.channel import TelegramChannel, make_bot
from bot.channels.telegram.ingress import TelegramPolling, TelegramWebhook, forbidden
from bot.channels.telegram.topics import TelegramAgents
from bot.channels.whatsapp.channel import WhatsAppChannel
from bot.channels.whatsapp.memory import RedisMemory
from bot.channels.whatsapp.webhook import WhatsAppWebhook
from bot.engine import LOCK_LEASE_SECONDS, Engine
from bot.handoff import NoAgents
from bot.http_guard import GuardedSite, quiet_bad_requests, server_options
from bot.logs import bounded_step
from bot.notice_runner import Notices, running_notices
from bot.relay import Relay
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings, require
from bot.startup import check_wisphub, listen
from bot.store import RedisStore, StoreError, TurnStart
from bot.web import make_app
from flows.ports import HandoffError, HandoffPort
from flows.texts import Texts
from flows.types import Channel, Inbound, Outbound

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


class Service:
    """One process of wispbot: channels in, engine, replies out."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channels: dict[Channel, ChannelAdapter] = {}
        self.telegram: TelegramChannel | None = None
        self.whatsapp: WhatsAppChannel | None = None
        self.whatsapp_hook: WhatsAppWebhook | None = None
        self.polling: TelegramPolling | None = None
        self.telegram_hook: TelegramWebhook | None = None
        self.bridge: MediaBridge | None = None
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
        self._stack = AsyncExitStack()
        self.notes = Texts(settings.bot.bot_language)
        self.health = SendHealth(settings.bot.ready_send_window)
        self.notices: Notices | None = None
        self._notice_stack = AsyncExitStack()  # stopped first at stop: no tick starts then

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
            if tg.webhook_secret is not None:
                self.telegram_hook = TelegramWebhook(
                    self.telegram,
                    tg.webhook_secret,
                    placing=self.on_inbound,
                    on_agent=self.on_agent,
                    spawn=self._spawn,
                    place_timeout=PLACE_WAIT_SECONDS,
                )
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
            if self.telegram is not None:
                self.bridge = MediaBridge(self.telegram, self.whatsapp)
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
        if self.whatsapp is not None and isinstance(self.runtime.store, RedisStore):
            # The 24-hour windows and paged lists in Redis: every process knows them.
            self.whatsapp.memory = RedisMemory(self.runtime.store.client)
        # One look at WispHub before HTTP serves: a refused key is one clear line at start, and
        # the probe is over before any traffic (nothing that counts WispHub calls sees it).
        await check_wisphub(self.runtime.wisphub)

        if isinstance(self.handoff, TelegramAgents):
            self._start_relay(self.handoff, self.runtime)
        # A request still running at stop gets a few seconds, not aiohttp's default minute.
        conf = self.settings.bot
        quiet_bad_requests()
        runner = web.AppRunner(
            make_app(self),
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
        # Notices the bot sends first (issue 15), on the low-priority lane of the same senders;
        # only once the process serves (a port in use stops it before any notice job starts).
        self.notices = await self._notice_stack.enter_async_context(
            running_notices(self.runtime, self.deliver, self.whatsapp, lambda: bool(self._turns))
        )

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
        # A notice cut short is in its outbox or not begun: the next process's tick or sweep.
        await bounded_step(
            self._notice_stack.aclose(), "stop: notices stopped", CLOSE_SECONDS, done
        )
        await runner.shutdown()
        if self.whatsapp_hook is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left()):
                    await self.whatsapp_hook.drain()
        await self._drain(started + DRAIN_SECONDS)
        done("stop: in-flight messages done")
        await bounded_step(runner.cleanup(), "stop: http closed", CLOSE_SECONDS, done)
        # A call the server was still reading at the signal may have started a turn since.
        await self._drain(loop.time() + LATE_TURN_SECONDS)
        await bounded_step(self.close(), "stop: clients closed", CLOSE_SECONDS, done)

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

    async def close(self) -> None:
        """Close clients and pools (also after a failed start)."""
        await self._notice_stack.aclose()
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

        # An agent's message is its own bubble; the bot's answers to a command are one.
        command = msg.text.strip().startswith("/")

        async def deliver(replies: list[Outbound]) -> list[Outbound]:
            agents = self.telegram.agents_chat_id if self.telegram is not None else None
            replies = [from_topic(reply, agents) for reply in replies]
            if command:
                replies = bubbles(replies)
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

    async def deliver(self, replies: list[Outbound]) -> list[Outbound]:
        """Send a turn's replies as one bubble (``bubbles``) in order; return what could not be
        sent (it stays in the outbox)."""
        undelivered, _ = await self._send_in_order(bubbles(replies))
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
                if self.bridge is not None and self.bridge.carries(reply):
                    await self.bridge.send(reply)
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

    # -- HTTP (the routes are in bot/web.py) -----------------------------------------------
    def _refused(self, channel: str) -> web.Response:
        log.info("webhook call refused: stopping", extra={"channel": channel})
        return web.Response(status=503, text="stopping, try again")

    async def whatsapp_webhook(self, request: web.Request) -> web.Response:
        """Meta's calls (signature checked by the hook); 503 once stopping."""
        if self.stopping:
            return self._refused("whatsapp")
        assert self.whatsapp_hook is not None
        return await self.whatsapp_hook.post(request)

    async def telegram_webhook(self, request: web.Request) -> web.Response:
        """Telegram's calls (secret token checked by the hook); 503 once stopping, 403 when
        this process serves no Telegram webhook."""
        if self.stopping:
            return self._refused("telegram")
        if self.telegram_hook is None:
            return forbidden()
        return await self.telegram_hook.post(request)
