"""Harness for the end-to-end suite: the real service as a child process, customers' chats.

It lives beside the fakes because ``tests/fakes`` is on the import path of both pytest and mypy
(test folders have no ``__init__.py`` and conftest modules are not importable), so
``tests/e2e/conftest.py`` and the e2e tests import it as ``from e2e_harness import ...``.

``BotProcess`` runs ``python -m bot run`` with an environment of our own, waits for ``/healthz``,
and can SIGKILL or SIGTERM it; its JSON logs go to a file. ``Chat`` is one customer's private chat
seen from the fake Bot API: moves (``say``, ``press``, ``sticker``, ``photo``) and ``expect``,
which waits, event-driven and bounded, for a matching bot message since the last move.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import redis.asyncio as aioredis
from telegram_api import FakeTelegram, Sent

from integrations.wisphub.sandbox import SANDBOX_API_KEY

REPO = Path(__file__).resolve().parents[2]
E2E_REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
# The bot with a 2-second HANDOFF_TIMEOUT keeps its sessions apart (database 11 of the same
# server): its sweeper would time out, within seconds, the handoffs of every bot it shares with.
E2E_TIMEOUT_REDIS_URL = os.environ.get(
    "E2E_TIMEOUT_REDIS_URL", urlunsplit(urlsplit(E2E_REDIS_URL)._replace(path="/11"))
)
# A bound, not a wait (readiness is polled): importing aiogram alone takes ~6 s of CPU and three
# bots start at once, which on a shared 2-core machine under load has taken over 30 s.
START_SECONDS = 90.0
REPLY_SECONDS = 10.0
WEBHOOK_SECRET = "e2e-secret_token-123"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# What the child inherits from the parent: nothing of the bot's own settings (a developer's shell
# must not change the run), only what a Python process needs.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")
BOTS: list[BotProcess] = []  # every bot started in this session, for failure reports


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def sigterm_and_wait(
    proc: subprocess.Popen[bytes],
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.05,
) -> bool:
    """SIGTERM a child and wait for it without blocking the loop; False if it outlived timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def fold(text: str) -> str:
    """Lower case without accents, so assertions read like the scenario files."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def bot_env(fake: FakeTelegram | None, sandbox_url: str, port: int, **extra: str) -> dict[str, str]:
    """The child's environment: the settings given here, plus PATH and friends from the parent."""
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        WISPHUB_API_URL=sandbox_url,
        WISPHUB_API_KEY=SANDBOX_API_KEY,
        # No look-up cache, so a fault injected in the sandbox is met at once.
        WISPHUB_CLIENT_CACHE_TTL="0",
        REDIS_URL=E2E_REDIS_URL,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        LOG_LEVEL="INFO",
        # Telegram's flood limits off (the fake has none): tests measure behaviour, not pacing,
        # which the channel's own tests cover.
        TELEGRAM_CHAT_INTERVAL="0",
        TELEGRAM_GLOBAL_RATE="0",
        BUSINESS_HOURS="",
    )
    if fake is not None:
        env.update(
            TELEGRAM_BOT_TOKEN=fake.token,
            TELEGRAM_API_URL=fake.base_url,
            TELEGRAM_AGENTS_CHAT_ID=str(fake.agents_chat_id),
        )
    env.update(extra)
    return env


class BotProcess:
    """``python -m bot run`` as a child process, with its HTTP port and its log file."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.env = env
        self.port = int(env["HTTP_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        # An empty working folder: a developer's .env in the repo must not leak into the run.
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = ""  # the test file that started it (whose failures show its log)
        # The fake Bot API a webhook-mode bot talks to: runs what the bot puts in its answers
        # to webhook calls (Telegram's "reply to the webhook with a method").
        self.telegram: FakeTelegram | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = START_SECONDS) -> None:  # noqa: ASYNC109
        """Start the child and wait (bounded) until ``/healthz`` answers 200."""
        self.launch()
        await self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the child without waiting (several bots can import in parallel)."""
        assert not self.running, "already running"
        if self not in BOTS:
            BOTS.append(self)
        self.proc = self._spawn()

    async def wait_ready(self, timeout: float = START_SECONDS) -> None:  # noqa: ASYNC109
        """Wait (bounded) until the launched child answers ``/healthz`` with 200."""
        assert self.proc is not None, "not launched"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    msg = f"bot {self.name} exited with {self.proc.returncode}:\n{self.logs()}"
                    raise AssertionError(msg)
                try:
                    async with http.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                # Readiness polling of a process we just started, not waiting for an outcome.
                await asyncio.sleep(0.05)
        self.kill9()
        msg = f"bot {self.name} did not answer /healthz within {timeout} s:\n{self.logs()}"
        raise AssertionError(msg)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Popen returns at once; only waiting for the child would block the loop.
        self._log = self.log_path.open("ab")
        self._log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
        self._log.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )

    def kill9(self) -> None:
        """SIGKILL: no draining, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._close_log()

    async def terminate(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """SIGTERM, then wait (without blocking the loop the fakes run in); the exit code."""
        assert self.proc is not None
        if not await sigterm_and_wait(self.proc, timeout):
            self.kill9()
            msg = f"bot {self.name} ignored SIGTERM for {timeout} s:\n{self.logs()}"
            raise AssertionError(msg)
        self._close_log()
        return self.proc.returncode

    def logs(self) -> str:
        """Everything the child wrote so far (all its runs)."""
        if self._log is not None:
            self._log.flush()
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """One HTTP request to the bot; (status, body text)."""
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.url}{path}", data=data, headers=headers) as resp,
        ):
            return resp.status, await resp.text()


class Chat:
    """One customer's private chat, seen from the fake Bot API.

    ``say``/``press``/``sticker``/``photo`` are the customer's moves; each opens a new window, and
    ``expect`` waits (event-driven, bounded) for a bot message in that window that matches.
    """

    def __init__(self, fake: FakeTelegram, chat_id: int, first_name: str = "Ana") -> None:
        self.fake = fake
        self.id = chat_id
        self.first_name = first_name
        self.start = 0
        self.moves: list[dict[str, Any]] = []  # the updates this customer produced

    def messages(self) -> list[Sent]:
        """Everything the bot sent to this chat."""
        return self.fake.sent(self.id)

    def window(self) -> list[Sent]:
        """What the bot sent since the customer's last move."""
        return self.messages()[self.start :]

    def _move(self) -> None:
        self.start = len(self.messages())

    def _moved(self, update: dict[str, Any]) -> dict[str, Any]:
        self.moves.append(update)
        return update

    def mark(self) -> int:
        """Open a new window without a move (before an agent's message); its start index."""
        self._move()
        return self.start

    def say(self, text: str) -> dict[str, Any]:
        """The customer types ``text``."""
        self._move()
        return self._moved(
            self.fake.user_text(self.id, text, first_name=self.first_name, last_name="Ruiz")
        )

    def sticker(self) -> dict[str, Any]:
        """The customer sends a sticker."""
        self._move()
        return self._moved(self.fake.user_sticker(self.id))

    def photo(self, caption: str = "") -> dict[str, Any]:
        """The customer sends a photo."""
        self._move()
        return self._moved(self.fake.user_photo(self.id, caption))

    def send(self, content: dict[str, Any]) -> dict[str, Any]:
        """The customer sends a message carrying ``content`` (a story, a checklist, ...)."""
        self._move()
        return self._moved(self.fake.user_content(self.id, content))

    def press(self, label: str) -> dict[str, Any]:
        """Press the newest inline button whose label is ``label`` (accents and case aside)."""
        for message in reversed(self.messages()):
            for button in message.buttons:
                if fold(button["text"]) == fold(label):
                    self._move()
                    return self._moved(
                        self.fake.user_press(
                            self.id,
                            button["callback_data"],
                            message.message_id,
                            first_name=self.first_name,
                            last_name="Ruiz",
                        )
                    )
        msg = f"no button {label!r} offered to chat {self.id}:\n{self.transcript()}"
        raise AssertionError(msg)

    async def expect(self, pattern: str, timeout: float = REPLY_SECONDS) -> Sent:  # noqa: ASYNC109
        """Wait until a message of the window (its text or a button label) matches ``pattern``."""
        return await wait_for_text(self.fake, self.id, pattern, self.start, timeout)

    def transcript(self) -> str:
        """The chat so far, for failure messages."""
        return transcript(self.messages())


def _matches(message: Sent, pattern: str) -> bool:
    haystack = "\n".join([message.text or "", *(b["text"] for b in message.buttons)])
    return re.search(fold(pattern), fold(haystack)) is not None


async def wait_for(
    fake: FakeTelegram,
    chat_id: int,
    predicate: Callable[[Sent], bool],
    what: str,
    start: int = 0,
    timeout: float = REPLY_SECONDS,  # noqa: ASYNC109
) -> Sent:
    """The first message to ``chat_id`` (from index ``start``) that satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        sent = fake.sent(chat_id)
        for message in sent[start:]:
            if predicate(message):
                return message
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            await fake.wait_for_messages(chat_id, len(sent) + 1, timeout=left)
        except TimeoutError:
            msg = (
                f"no message {what} reached chat {chat_id} within {timeout} s;"
                f" since #{start}:\n{transcript(fake.sent(chat_id)[start:])}"
            )
            raise AssertionError(msg) from None


async def wait_for_text(
    fake: FakeTelegram,
    chat_id: int,
    pattern: str,
    start: int = 0,
    timeout: float = REPLY_SECONDS,  # noqa: ASYNC109
    thread_id: int | None = None,
) -> Sent:
    """The first message to ``chat_id`` (from ``start``, in ``thread_id`` if given) matching."""

    def wanted(message: Sent) -> bool:
        in_thread = thread_id is None or message.message_thread_id == thread_id
        return in_thread and _matches(message, pattern)

    where = f" in topic {thread_id}" if thread_id is not None else ""
    return await wait_for(fake, chat_id, wanted, f"matching {pattern!r}{where}", start, timeout)


def transcript(messages: list[Sent]) -> str:
    """Messages as readable lines."""
    lines = []
    for m in messages:
        buttons = " ".join(f"[{b['text']}]" for b in m.buttons)
        where = f" (topic {m.message_thread_id})" if m.message_thread_id else ""
        lines.append(f"  {m.method}{where}: {m.text!r} {buttons}".rstrip())
    return "\n".join(lines) or "  (nothing)"


async def identify(chat: Chat, document: str, name: str, first_name: str) -> None:
    """Walk from the greeting to the verified client menu."""
    chat.say("/start")
    await chat.expect("Soy cliente")
    chat.press("Soy cliente")
    await chat.expect("documento")
    chat.say(document)
    await chat.expect("nombre completo")
    chat.say(name)
    await chat.expect(f"Gracias, {first_name}")
    await chat.expect("Estado de cuenta")


async def open_handoff(chat: Chat, fake: FakeTelegram) -> Sent:
    """Press "Hablar con un asesor" (offered in the newest menu); return the agents' card."""
    agents_start = len(fake.sent(fake.agents_chat_id))
    chat.press("Hablar con un asesor")
    await chat.expect("Te comunico con un asesor")
    card = await wait_for_text(fake, fake.agents_chat_id, "Nueva conversacion", agents_start)
    assert card.message_thread_id in fake.topics
    return card


@contextlib.asynccontextmanager
async def launched(bots: dict[str, BotProcess], owner: str) -> AsyncIterator[dict[str, BotProcess]]:
    """Launch the bots together (start-up is mostly imports: they overlap); at the end, stop
    those still running. ``owner`` is the test file whose failures show their logs."""
    for bot in bots.values():
        bot.owner = owner
        bot.launch()
    try:
        yield bots
    finally:
        for bot in bots.values():
            if bot.running:
                await bot.terminate()


async def running(bot: BotProcess) -> BotProcess:
    """The bot, ready: launched and still starting, or stopped by an earlier test (restarted)."""
    if bot.running:
        await bot.wait_ready()
    else:
        await bot.start()
    return bot


async def webhook_call(
    bot: BotProcess, update: dict[str, Any] | bytes, secret: str | None = WEBHOOK_SECRET
) -> tuple[int, str]:
    """POST one update to the bot's Telegram webhook as Telegram would: the HTTP status and the
    answer. A method the answer names is run by the bot's fake Bot API, as Telegram runs it."""
    body = update if isinstance(update, bytes) else json.dumps(update).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    status, answer = await bot.request("POST", "/webhooks/telegram", data=body, headers=headers)
    if status == 200 and bot.telegram is not None:
        await bot.telegram.webhook_reply(answer)
    return status, answer


async def post_update(
    bot: BotProcess, update: dict[str, Any] | bytes, secret: str | None = WEBHOOK_SECRET
) -> int:
    """``webhook_call``'s HTTP status."""
    return (await webhook_call(bot, update, secret))[0]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = REPLY_SECONDS,  # noqa: ASYNC109
) -> None:
    """Poll an outside state (Redis, the sandbox log) until ``check`` holds, bounded."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def flush_when_unlocked(url: str) -> None:
    """Flush a Redis database once no turn holds a lock there (bounded: 5 s).

    The previous test's last turn may still be saving after its last reply was seen: a flush
    before its final save would hand the next test a stale conversation. Polled: Redis tells of
    deleted keys only with keyspace notifications, a server-wide setting."""
    client = aioredis.Redis.from_url(url)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while await client.keys("wispbot:lock:*"):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        await client.flushdb()
    finally:
        await client.aclose()
