"""The bodies of the CLI's long-running commands (``python -m bot``, see ``__main__.py``):
``run`` (the service, until SIGTERM) and ``chat`` (the console: a terminal conversation with the
bot, the demo WispHub sandbox unless ``WISPHUB_API_URL`` is set, in-memory sessions unless
``REDIS_URL`` is set; piped stdin works: one message a line, ``#1``, ``#2``... or the label
choose an option; lines starting with ``!`` play the agent in the agents' topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError

from bot.channels.base import AgentMessage, bubbles
from bot.channels.console import KEY, render
from bot.handoff import LocalAgents
from bot.logs import log_key, report_stuck_stop, setup_logging
from bot.notice_runner import running_notices
from bot.runtime import open_runtime
from bot.settings import SettingsError, load_settings, require
from bot.startup import telegram_problem
from bot.store import MemoryStore
from flows.texts import Texts
from flows.types import Inbound, Kind, Outbound

T = TypeVar("T")
log = logging.getLogger("bot.service")

DEMO_ISP = "FibraNet Demo"  # the sandbox's tenant
# The collector's thresholds while serving: a turn allocates thousands of short-lived objects
# (requests, coroutines, dicts of JSON), which Python's default (a young collection every 700
# allocations) walks again and again while they are still alive; most die before 20,000.
GC_THRESHOLDS = (20_000, 20, 10)


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """``main`` on uvloop (a faster event loop) where it exists; plain asyncio elsewhere (the
    service, and ``make bench``'s load generator, which shares the cores with the bots)."""
    try:
        import uvloop
    except ImportError:  # Windows: uvloop is POSIX-only
        return asyncio.run(main)
    return uvloop.run(main)


async def run_service() -> int:
    """``python -m bot run``: serve until SIGTERM/SIGINT, then drain and exit 0."""
    from bot.service import STOP_REPORT_SECONDS, Service  # the chat command needs none of it

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
    gc.set_threshold(*GC_THRESHOLDS)
    log.info("wispbot running")
    await stop.wait()
    log.info("stopping: draining in-flight messages")
    report = loop.call_later(STOP_REPORT_SECONDS, report_stuck_stop)
    try:
        await service.stop(runner)
    finally:
        report.cancel()
    log.info("stopped")
    return 0


async def _read_lines(stream: TextIO) -> asyncio.Queue[str | None]:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in stream:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    # A daemon thread: a reader blocked on a terminal must never keep the process alive after
    # the chat ended (asyncio's executor would wait for it, and the chat would hang).
    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
    return queue


async def run_console(
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Chat in the terminal until end of input or /salir."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    use_sandbox = "WISPHUB_API_URL" not in os.environ
    # The demo tenant has a name of its own; a real ISP sets ISP_NAME.
    settings = load_settings(
        bot={"isp_name": DEMO_ISP} if use_sandbox and "ISP_NAME" not in os.environ else {}
    )
    texts = Texts(settings.bot.bot_language)
    agents = LocalAgents()
    color = stdout.isatty()
    interactive = stdin.isatty()
    events = itertools.count(1)
    prompt = texts("console.prompt")
    name = texts("console.customer")

    def say(line: str) -> None:
        print(line, file=stdout, flush=True)

    # Without Redis the demo keeps conversations in memory: said to the person trying it in
    # plain words, instead of the service's warning for operators.
    store = MemoryStore() if settings.bot.redis_url is None else None
    if store is not None:
        say(texts("console.memory"))
    async with (
        contextlib.AsyncExitStack() as stack,
        open_runtime(settings, agents, use_sandbox=use_sandbox, store=store) as rt,
    ):
        if store is not None:
            stack.push_async_callback(store.aclose)

        def show(replies: list[Outbound], *, merge: bool = True) -> None:
            # One printed block per turn, as the channels send one bubble (agents' lines apart).
            for reply in bubbles(replies) if merge else replies:
                say(render(reply, color=color))

        async def notify(replies: list[Outbound]) -> list[Outbound]:
            show(replies)  # notices print as they arrive, between the customer's lines
            return []

        await stack.enter_async_context(running_notices(rt, notify))
        if rt.sandbox is not None:
            say(texts("console.sandbox", url=rt.sandbox.url))
        show(await rt.engine.handle(Inbound(KEY, f"c{next(events)}", text="/start")))
        queue = await _read_lines(stdin)
        while True:
            if interactive:
                print(f"{prompt} ", end="", file=stdout, flush=True)
            line = await queue.get()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if not interactive:
                say(f"{prompt} {text}")
            # Topics are keyed by thread id: a topic (a mutable record) is no dictionary key.
            before = {t.thread_id: len(t.posts) for t in agents.topics.values()}
            if text.startswith("!"):
                topic = agents.topic_of(KEY)
                if topic is None:
                    say(texts("console.no_topic"))
                    continue
                message = AgentMessage(topic.thread_id, next(events), text[1:].strip(), "agent")
                show(await rt.engine.from_agent(message), merge=text[1:].strip().startswith("/"))
            else:
                inbound = Inbound(KEY, f"c{next(events)}", Kind.TEXT, text=text, display_name=name)
                show(await rt.engine.handle(inbound))
            # What reached the agents' topic: the card, the customer's lines, the bot's notes.
            for topic in agents.topics.values():
                for post in topic.posts[before.get(topic.thread_id, 0) :]:
                    say(f"     {texts('console.topic_post', thread_id=topic.thread_id, post=post)}")
    return 0
