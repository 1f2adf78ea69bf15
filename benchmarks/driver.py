"""The benchmark harness: local peers in process, each bot in a subprocess, customers as tasks.

In this process: the WispHub sandbox (with a counter of requests in flight) and the fake Bot
API (which records every message a bot sends, with its arrival time). Each bot runs as its own
subprocess in webhook mode, pointed at both. A customer posts a webhook update, waits until the
bot's replies to it reached the fake, then sends the next message (closed loop). A message's
latency runs from the moment its update was posted to the arrival of its last reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from benchmarks.data import Customer
from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
from telegram_api import FakeTelegram, Sent  # noqa: E402 (a test fake, found on its path)

SECRET = "bench-secret-token"  # noqa: S105 (a local, throwaway webhook secret)
REPLY_TIMEOUT = 10.0  # a message without all its replies by then is unanswered
START_TIMEOUT = 90.0  # a loaded machine (CI, eight test runs at once) imports aiogram slowly
_R = TypeVar("_R")
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Step:
    """One customer move: type ``value`` or press the button labelled ``value``; at most
    ``replies`` messages, the answer complete with the first that shows ``expect`` (wispbot
    sends a turn as one message, the peer as two)."""

    kind: str  # "text" | "press"
    value: str
    replies: int
    expect: str | None = None  # a regex the last reply's text or buttons must match


IDENTIFY = (
    Step("text", "/start", 2, "Soy cliente"),
    Step("press", "Soy cliente", 1, "documento"),
    Step("text", "{document}", 1, "nombre"),
    Step("text", "{name}", 2, "Reportar falla"),
)
OUTAGE = (*IDENTIFY, Step("press", "Reportar falla", 2, "algo más"))


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the fake Bot API, with a per-chat index ------------------------------------------------


class BenchTelegram(FakeTelegram):
    """The fake Bot API with per-chat message lists and waiters (O(1) per message at scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_chat: dict[int | str, list[Sent]] = {}
        self.update_ids = itertools.count(1)
        self.user_message_ids = itertools.count(1_000_000)
        self.callback_ids = itertools.count(1)
        self._waiters: dict[int | str, list[tuple[int, asyncio.Future[None]]]] = {}

    def _record(self, method: str, params: dict[str, Any], text: str | None) -> dict[str, Any]:
        message = super()._record(method, params, text)
        sent = self.messages[-1]
        chat = self.by_chat.setdefault(sent.chat_id, [])
        chat.append(sent)
        waiting = self._waiters.get(sent.chat_id)
        if waiting:
            for n, future in list(waiting):
                if len(chat) >= n and not future.done():
                    future.set_result(None)
        return message

    async def wait_count(self, chat_id: int, n: int, timeout: float) -> bool:  # noqa: ASYNC109
        """True once ``n`` messages reached the chat, False after ``timeout`` seconds."""
        if len(self.by_chat.get(chat_id, ())) >= n:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.setdefault(chat_id, []).append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters[chat_id].remove(entry)
            if not self._waiters[chat_id]:
                del self._waiters[chat_id]
        return True


@dataclass
class InFlight:
    """Requests the sandbox is serving right now, and the most it ever served at once."""

    current: int = 0
    peak: int = 0


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """Serve an aiohttp app on a free loopback port; yield the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_peers(sandbox: Sandbox) -> AsyncIterator[tuple[BenchTelegram, InFlight]]:
    """The sandbox (counting requests in flight) and a fresh fake Bot API, both served."""
    inflight = InFlight()

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)  # type: ignore[no-any-return]
        inflight.current += 1
        inflight.peak = max(inflight.peak, inflight.current)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            inflight.current -= 1

    app = sandbox.make_app()
    app.middlewares.append(count)
    fake = BenchTelegram()
    async with serving(app) as sb_port, serving(fake.app) as tg_port:
        sandbox.url = f"http://127.0.0.1:{sb_port}/api/"
        fake.base_url = f"http://127.0.0.1:{tg_port}"
        yield fake, inflight


# ---- the bots as subprocesses ----------------------------------------------------------------


def met(ok: bool) -> str:
    """A target's verdict in the report."""
    return "met" if ok else "NOT met"


@dataclass(frozen=True)
class BotSpec:
    """How to start one bot."""

    label: str
    module: str  # python -m <module> [args]
    args: tuple[str, ...]
    redis_db: int
    env: dict[str, str] = field(default_factory=dict)
    pacing: str = ""


def wispbot_spec(*, pacing: bool = False, redis_db: int = 11) -> BotSpec:
    """wispbot's own service, ``python -m bot run``; Telegram pacing off unless asked."""
    env = {} if pacing else {"TELEGRAM_CHAT_INTERVAL": "0", "TELEGRAM_GLOBAL_RATE": "0"}
    note = (
        "Telegram limits (1 msg/s per chat, burst 3; 30/s overall)"
        if pacing
        else "off (TELEGRAM_CHAT_INTERVAL=0, TELEGRAM_GLOBAL_RATE=0)"
    )
    return BotSpec("wispbot", "bot", ("run",), redis_db, env, note)


def peer_spec(*, redis_db: int = 10, uvloop: bool = False) -> BotSpec:
    """The idiomatic aiogram 3 peer (on asyncio's loop, as aiogram's templates; or on uvloop)."""
    if uvloop:
        env = {"PEER_UVLOOP": "1"}
        return BotSpec("peer+uvloop", "benchmarks.peer_aiogram", (), redis_db, env, "none")
    return BotSpec("peer", "benchmarks.peer_aiogram", (), redis_db, {}, "none (aiogram default)")


def _redis_base() -> str:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return url.rsplit("/", 1)[0] if re.search(r"/\d+$", url) else url.rstrip("/")


class BotProcess:
    """One bot subprocess, started against the fake and the sandbox, stopped with SIGTERM."""

    def __init__(
        self,
        spec: BotSpec,
        fake: BenchTelegram,
        sandbox: Sandbox,
        workdir: Path,
        *,
        log_level: str = "WARNING",
        profile: Path | None = None,
    ) -> None:
        self.spec = spec
        self.fake = fake
        self.port = free_port()
        self.webhook_url = f"http://127.0.0.1:{self.port}/webhooks/telegram"
        self.redis_url = f"{_redis_base()}/{spec.redis_db}"
        self.log_path = workdir / f"{spec.label}-{self.port}.log"
        self.workdir = workdir
        self.log_level = log_level
        self.profile = profile
        self.sandbox = sandbox
        self.proc: asyncio.subprocess.Process | None = None

    def _env(self) -> dict[str, str]:
        # Only the parent's plumbing is inherited, never its wispbot settings (or a .env: the
        # bot runs in a scratch directory).
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SYSTEMROOT", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(
            PYTHONPATH=str(ROOT),
            PYTHONDONTWRITEBYTECODE="1",
            TELEGRAM_BOT_TOKEN=self.fake.token,
            TELEGRAM_API_URL=self.fake.base_url,
            TELEGRAM_WEBHOOK_URL=self.webhook_url,
            TELEGRAM_WEBHOOK_SECRET=SECRET,
            REDIS_URL=self.redis_url,
            WISPHUB_API_URL=self.sandbox.url,
            WISPHUB_API_KEY=SANDBOX_API_KEY,
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(self.port),
            LOG_LEVEL=self.log_level,
        )
        env.update(self.spec.env)
        return env

    async def start(self) -> None:
        """Flush the bot's Redis database, start it, wait until it serves and set its webhook."""
        redis = Redis.from_url(self.redis_url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()
        self.fake.webhook = {}
        cmd = [sys.executable]
        if self.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile)]
        cmd += ["-m", self.spec.module, *self.spec.args]
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, env=self._env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    msg = f"{self.spec.label} exited at start:\n{self.tail()}"
                    raise RuntimeError(msg)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200 and self.fake.webhook.get("url"):
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        msg = f"{self.spec.label} did not become ready in {START_TIMEOUT:g} s:\n{self.tail()}"
        raise RuntimeError(msg)

    def cpu_seconds(self) -> float:
        """User + system CPU time the bot process used so far (Linux /proc; 0 elsewhere)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_kib(self) -> int:
        """The bot process's resident memory in KiB (Linux /proc; 0 elsewhere)."""
        if self.proc is None:
            return 0
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(found[1]) if found else 0

    async def stop(self) -> None:
        """SIGTERM (the bot drains and exits), then kill if it lingers."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        """The end of the bot's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ---- customers -------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one load run measured."""

    label: str
    conversations: int = 0
    completed: int = 0  # every step answered as expected
    messages: int = 0  # customer messages sent
    answered: int = 0
    unanswered: int = 0
    unexpected: int = 0  # answered, but not with what the step expected
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    wisphub_calls: int = 0
    wisphub_peak: int = 0
    cpu_seconds: float = 0.0
    sends: int = 0  # sendMessage calls (refused ones included)
    refusals: int = 0  # of those, answered 429 (Telegram's flood limits)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def combined(cls, parts: Sequence[RunResult]) -> RunResult:
        """Runs of one kind taken in segments, as one run (their times and counts summed)."""
        out = cls(parts[0].label)
        for part in parts:
            out.conversations += part.conversations
            out.completed += part.completed
            out.messages += part.messages
            out.answered += part.answered
            out.unanswered += part.unanswered
            out.unexpected += part.unexpected
            out.latencies += part.latencies
            out.elapsed += part.elapsed
            out.wisphub_calls += part.wisphub_calls
            out.wisphub_peak = max(out.wisphub_peak, part.wisphub_peak)
            out.cpu_seconds += part.cpu_seconds
            out.sends += part.sends
            out.refusals += part.refusals
            out.errors += part.errors
        return out

    @property
    def sends_per_message(self) -> float:
        """Bot API sends per customer message."""
        return self.sends / self.messages if self.messages else float("nan")

    @property
    def rate(self) -> float:
        """Answered customer messages a second over the run."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of reply latency, in seconds (nan without data)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def calls_per_conversation(self) -> float:
        """WispHub requests per completed conversation."""
        return self.wisphub_calls / self.completed if self.completed else float("nan")


class Customers:
    """Posts customers' updates to one bot's webhook and times the replies on the fake."""

    def __init__(
        self,
        fake: BenchTelegram,
        webhook_url: str,
        http: aiohttp.ClientSession,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.fake = fake
        self.reply_timeout = reply_timeout
        self.webhook_url = webhook_url
        self.http = http
        # Ids come from the fake: they must grow across runs, or a bot's dedupe drops updates.
        self._update_ids = fake.update_ids
        self._message_ids = fake.user_message_ids
        self._callback_ids = fake.callback_ids

    def _user(self, chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "is_bot": False, "first_name": "Cliente", "language_code": "es"}

    def text_update(self, chat_id: int, text: str) -> dict[str, Any]:
        """A private-chat text message (a command gets its bot_command entity)."""
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Cliente"},
            "from": self._user(chat_id),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text)}]
        return {"update_id": next(self._update_ids), "message": message}

    def press_update(self, chat_id: int, label: str) -> dict[str, Any]:
        """Press the newest button labelled ``label`` in the chat (KeyError when none)."""
        want = label.casefold()
        for sent in reversed(self.fake.by_chat.get(chat_id, [])):
            for button in sent.buttons:
                if str(button.get("text", "")).casefold() == want:
                    message = {
                        "message_id": sent.message_id,
                        "date": int(time.time()),
                        "chat": {"id": chat_id, "type": "private", "first_name": "Cliente"},
                        "from": self.fake._bot_user(),
                        "text": sent.text or "…",
                        "reply_markup": sent.reply_markup,
                    }
                    query = {
                        "id": str(next(self._callback_ids)),
                        "from": self._user(chat_id),
                        "message": message,
                        "chat_instance": f"ci{chat_id}",
                        "data": button["callback_data"],
                    }
                    return {"update_id": next(self._update_ids), "callback_query": query}
        raise KeyError(label)

    async def post(self, update: dict[str, Any]) -> None:
        """Deliver one update to the bot's webhook as Telegram does."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with self.http.post(self.webhook_url, json=update, headers=headers) as r:
            if r.status != 200:
                msg = f"webhook answered {r.status}"
                raise RuntimeError(msg)
            answer = await r.read()
        # Telegram runs a method a bot names in its answer (aiogram's handler never does).
        await self.fake.webhook_reply(answer)

    async def conversation(
        self, customer: Customer, steps: Sequence[Step], result: RunResult
    ) -> None:
        """One customer's conversation, closed loop: the next message only after the replies."""
        result.conversations += 1
        chat = customer.chat_id
        for step in steps:
            value = step.value.format(document=customer.document, name=customer.name)
            try:
                update = (
                    self.text_update(chat, value)
                    if step.kind == "text"
                    else self.press_update(chat, value)
                )
            except KeyError:
                result.errors.append(f"chat {chat}: no button {value!r} to press")
                return
            before = len(self.fake.by_chat.get(chat, ()))
            started = time.monotonic()
            result.messages += 1
            try:
                await self.post(update)
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as err:
                result.unanswered += 1
                result.errors.append(f"chat {chat}: {type(err).__name__}: {err}")
                return
            replies = await self._answer(chat, before, step, started + self.reply_timeout)
            if not replies:
                result.unanswered += 1
                return
            result.answered += 1
            result.latencies.append(replies[-1].at - started)
            if step.expect and not _shows(replies[-1], step.expect):
                result.unexpected += 1
                got = " | ".join((r.text or "")[:50] for r in replies)
                result.errors.append(f"chat {chat}: {value!r} answered {got!r}")
                return
        result.completed += 1

    async def _answer(self, chat: int, before: int, step: Step, deadline: float) -> list[Sent]:
        """The replies to a step: up to the first that shows what it expects, at most
        ``step.replies``; none when nothing came by ``deadline``."""
        seen = before
        while seen - before < step.replies:
            left = deadline - time.monotonic()
            if left <= 0 or not await self.fake.wait_count(chat, seen + 1, left):
                return []
            seen = len(self.fake.by_chat[chat])
            if step.expect is None or _shows(self.fake.by_chat[chat][seen - 1], step.expect):
                break
        return self.fake.by_chat[chat][before:seen]


def _shows(sent: Sent, pattern: str) -> bool:
    labels = " ".join(str(b.get("text", "")) for b in sent.buttons)
    return re.search(pattern, f"{sent.text or ''} {labels}", re.IGNORECASE) is not None


async def run_load(
    bot: BotProcess,
    sandbox: Sandbox,
    inflight: InFlight,
    label: str,
    plan: Sequence[Sequence[Customer]],
    steps: Sequence[Step],
    *,
    window: float = 0.0,
    deadline: float = 300.0,
    reply_timeout: float = REPLY_TIMEOUT,
) -> RunResult:
    """Run ``plan``: one worker per list, its customers one after the other.

    ``window`` > 0 spreads the workers' first messages evenly over that many seconds (arrivals);
    0 starts them all at once. The whole run is cut off after ``deadline`` seconds.
    """
    result = RunResult(label)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:
        customers = Customers(bot.fake, bot.webhook_url, http, reply_timeout)
        calls_before = len(bot.fake.calls)
        sandbox.requests.clear()
        inflight.peak = 0
        # The load generator's own garbage collector must not stall a run (a full collection of
        # its heap took ~170 ms, landing in whichever bot's run it fell): what exists now is
        # frozen, and collection waits until the run is over.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu_before = bot.cpu_seconds()
        started = time.monotonic()
        count = max(len(plan), 1)

        async def worker(index: int, queue: Sequence[Customer]) -> None:
            if window > 0:
                await asyncio.sleep(window * index / count)
            for customer in queue:
                await customers.conversation(customer, steps, result)

        tasks = [asyncio.create_task(worker(i, q)) for i, q in enumerate(plan)]
        try:
            done, pending = await asyncio.wait(tasks, timeout=deadline)
        finally:
            gc.enable()
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                result.errors.append(repr(task.exception()))
        if pending:
            result.errors.append(f"run cut off after {deadline:g} s ({len(pending)} workers)")
        stamps = [m.at for m in bot.fake.messages if m.at >= started]
        result.elapsed = (max(stamps) if stamps else time.monotonic()) - started
        result.cpu_seconds = bot.cpu_seconds() - cpu_before
        sends = [c for c in bot.fake.calls[calls_before:] if c.method == "sendMessage"]
        result.sends = len(sends)
        result.refusals = sum(1 for c in sends if c.error_code == 429)
        result.wisphub_calls = len(sandbox.requests)
        result.wisphub_peak = inflight.peak
    return result


def split(customers: Sequence[Customer], workers: int) -> list[list[Customer]]:
    """Deal customers to ``workers`` queues round robin."""
    queues: list[list[Customer]] = [[] for _ in range(max(1, workers))]
    for i, c in enumerate(customers):
        queues[i % len(queues)].append(c)
    return [q for q in queues if q]


async def with_bot(
    spec: BotSpec,
    fake: BenchTelegram,
    sandbox: Sandbox,
    workdir: Path,
    body: Callable[[BotProcess], Awaitable[_R]],
    *,
    log_level: str = "WARNING",
    profile: Path | None = None,
) -> _R:
    """Start the bot, run ``body`` with it, stop it whatever happens."""
    bot = BotProcess(spec, fake, sandbox, workdir, log_level=log_level, profile=profile)
    await bot.start()
    try:
        return await body(bot)
    finally:
        await bot.stop()


def scratch_dir() -> Path:
    """A directory for the bots' logs (and working directory: no .env is read there)."""
    return Path(tempfile.mkdtemp(prefix="wispbot-bench-"))
