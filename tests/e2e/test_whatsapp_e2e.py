"""End to end on WhatsApp: the real service (``python -m bot run``) as a subprocess.

The peers run in this test process on free loopback ports: the fake Graph API (where the bot
sends), the fake Telegram Bot API (the agents' forum topics), and the WispHub sandbox. The test
plays Meta: it signs webhook calls with the app secret and posts them to /webhooks/whatsapp, then
waits (event-based, with timeouts) for what the bot sends to the fake Graph API.

Sessions live in Redis database 12 (other suites use 13-15), flushed before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import flush_when_unlocked
from fixtures import fixture
from graph_api import (
    FakeGraph,
    as_username,
    from_shape,
    inbound_button,
    inbound_contact,
    inbound_list,
    inbound_location,
    inbound_media,
    inbound_text,
    running_fake_graph,
    sign,
    status_update,
    webhook,
)
from telegram_api import FakeTelegram, Sent, running_fake_telegram

from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox, running_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("E2E_WHATSAPP_REDIS_URL", "redis://127.0.0.1:6379/12")
TOKEN = "EAAG-e2e-permanent-token"
APP_SECRET = "e2e-app-secret"
VERIFY_TOKEN = "e2e-verify-token"
PHONE_NUMBER_ID = "106540352242922"
ANA = "573001112233"  # demo client 10 (Ana María Ruiz Gómez), telefono 3001112233
STRANGER = "573125550000"  # no client has this number
ANA_DOCUMENT = "1020304050"
START_SECONDS = 90.0  # as the e2e harness: start-up imports take 15-20 s on a busy 2-core machine
WAIT = 8.0  # seconds any single expected outcome may take
# The agents' group is paced as Telegram requires (20 posts a minute: one every 3 s after a
# burst of 3), so a post may queue behind a few others.
AGENTS_WAIT = 15.0


def fold(text: str) -> str:
    """Case- and accent-insensitive form, for matching what the bot said."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def content(message: dict[str, Any]) -> str:
    """Everything a customer sees of one sent message: text, body, button and row titles."""
    kind = message.get("type")
    if kind == "text":
        return str(message["text"]["body"])
    if kind == "interactive":
        inter = message["interactive"]
        parts = [inter["body"]["text"]]
        parts += [b["reply"]["title"] for b in inter["action"].get("buttons", [])]
        for section in inter["action"].get("sections", []):
            parts += [f"{r['title']} {r.get('description', '')}" for r in section["rows"]]
        return "\n".join(parts)
    return f"[{kind}]"


def options(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, id, title) of the choices a message offers: "button" or "list" rows."""
    if message.get("type") != "interactive":
        return []
    inter = message["interactive"]
    if inter["type"] == "button":
        return [
            ("button", b["reply"]["id"], b["reply"]["title"]) for b in inter["action"]["buttons"]
        ]
    return [("list", r["id"], r["title"]) for s in inter["action"]["sections"] for r in s["rows"]]


def free_port() -> int:
    """A free loopback port for the bot's HTTP server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Peers:
    """What the bot talks to, all served in this test process."""

    graph: FakeGraph
    telegram: FakeTelegram
    sandbox: Sandbox


class BotUnderTest:
    """The service subprocess (start, stop, restart) and the test's side of Meta's webhook."""

    def __init__(
        self, peers: Peers, http: aiohttp.ClientSession, cwd: Path, env: dict[str, str]
    ) -> None:
        self.peers = peers
        self.env = env  # settings of this run on top of bot_env's
        self.cwd = cwd  # an empty folder: a developer's .env in the repository is not read
        self.http = http
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start ``python -m bot run``; wait for its "wispbot running" log line."""
        proc = self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=self.cwd,
            env={**bot_env(self.peers, self.port), **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.Event()

        async def read() -> None:
            # Drain the pipe for the whole run, or a chatty bot would block on a full pipe.
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if '"wispbot running"' in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting; the check below reports it

        self._reader = asyncio.create_task(read())
        async with asyncio.timeout(START_SECONDS):
            await ready.wait()
        assert proc.returncode is None, "the bot did not start:\n" + self.log_tail()

    async def stop(self) -> int:
        """SIGTERM (the service drains and exits); return the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def restart(self) -> None:
        """Stop cleanly and start again: everything in the process's memory is gone."""
        code = await self.stop()
        assert code == 0, "the bot did not exit cleanly on SIGTERM:\n" + self.log_tail()
        await self.start()

    async def post(
        self, body: bytes, *, signature: str | None = "sign", content_type: str = "application/json"
    ) -> int:
        """POST a raw body to the webhook; sign it with the app secret unless told otherwise."""
        headers = {"Content-Type": content_type}
        if signature == "sign":
            headers["X-Hub-Signature-256"] = sign(body, APP_SECRET)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        async with self.http.post(f"{self.url}/webhooks/whatsapp", data=body, headers=headers) as r:
            return r.status

    async def deliver(self, payload: dict[str, Any]) -> None:
        """Meta delivers a signed webhook call; the bot must accept it at once."""
        status = await self.post(json.dumps(payload).encode())
        assert status == 200, self.log_tail()

    def chat(self, wa_id: str) -> Chat:
        """A customer's conversation."""
        return Chat(self, wa_id)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the bot's log, for failure messages."""
        return "\n".join(self.output[-lines:])


class Chat:
    """One WhatsApp customer: moves in, replies (since the last move) out."""

    def __init__(self, bot: BotUnderTest, wa_id: str) -> None:
        self.bot = bot
        self.wa_id = wa_id
        self.graph = bot.peers.graph
        self.mark = 0
        self.wamids: list[str] = []

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Every message the bot sent this customer."""
        return self.graph.messages_to(self.wa_id)

    @property
    def since(self) -> list[dict[str, Any]]:
        """Messages sent since the customer's last move."""
        return self.sent[self.mark :]

    async def _move(self, payload: dict[str, Any]) -> None:
        if not self.wa_id.isdigit():  # a username user: Meta gives the BSUID, no number
            payload = as_username(payload)
        self.mark = len(self.sent)
        self.wamids.append(payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
        await self.bot.deliver(payload)

    async def say(self, text: str) -> None:
        """The customer types a text."""
        await self._move(inbound_text(self.wa_id, text))

    async def send(self, payload: dict[str, Any]) -> None:
        """The customer sends any message (media, contact, location)."""
        await self._move(payload)

    async def press(self, pattern: str) -> None:
        """Press the button or list row matching ``pattern`` in the newest message with choices."""
        wanted = re.compile(fold(pattern))

        def offered() -> list[tuple[str, str, str]]:
            return next((options(m) for m in reversed(self.sent) if options(m)), [])

        def found() -> list[tuple[str, str, str]]:
            return [o for o in offered() if wanted.search(fold(o[2]))]

        try:
            await self.graph.wait_until(lambda: bool(found()), WAIT)
        except TimeoutError:
            pytest.fail(f"no option {pattern!r} in {offered()}\n{self.bot.log_tail()}")
        kind, reply_id, title = found()[0]
        press = inbound_button if kind == "button" else inbound_list
        await self._move(press(self.wa_id, reply_id, title))

    async def expect(self, pattern: str, timeout: float = WAIT) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for a message since the last move that matches ``pattern``; return it."""
        wanted = re.compile(fold(pattern), re.DOTALL)

        def match() -> dict[str, Any] | None:
            return next((m for m in self.since if wanted.search(fold(content(m)))), None)

        try:
            await self.graph.wait_until(lambda: match() is not None, timeout)
        except TimeoutError:
            said = [content(m) for m in self.since]
            pytest.fail(
                f"no reply matching {pattern!r}; since the last move: {said}\n{self.bot.log_tail()}"
            )
        found = match()
        assert found is not None
        return found

    def transcript(self) -> str:
        """Everything said to this customer since the last move, joined."""
        return "\n".join(content(m) for m in self.since)


class Agents:
    """The agents' forum on the fake Telegram."""

    def __init__(self, bot: BotUnderTest) -> None:
        self.bot = bot
        self.tg = bot.peers.telegram
        self.chat_id = self.tg.agents_chat_id
        self.start = len(self.tg.sent(self.chat_id))  # earlier tests' posts are not ours

    def posts(self, thread_id: int | None = None) -> list[Sent]:
        """Messages the bot put in the agents' group (in one topic when given)."""
        sent = self.tg.sent(self.chat_id)[self.start :]
        return [m for m in sent if thread_id is None or m.message_thread_id == thread_id]

    async def expect(
        self,
        pattern: str,
        thread_id: int | None = None,
        *,
        method: str | None = None,
        timeout: float = AGENTS_WAIT,  # noqa: ASYNC109
    ) -> Sent:
        """Wait for a post in the agents' group matching ``pattern`` (and ``method``)."""
        wanted = re.compile(fold(pattern), re.DOTALL)

        def match() -> Sent | None:
            return next(
                (
                    m
                    for m in self.posts(thread_id)
                    if wanted.search(fold(m.text or "")) and (method is None or m.method == method)
                ),
                None,
            )

        try:
            async with asyncio.timeout(timeout):
                while (found := match()) is None:
                    await self.tg.wait_for_messages(
                        self.chat_id, len(self.tg.sent(self.chat_id)) + 1
                    )
        except TimeoutError:
            posts = [(m.method, m.text) for m in self.posts(thread_id)]
            pytest.fail(f"no post matching {pattern!r} in {posts}\n{self.bot.log_tail()}")
        return found

    def write(self, thread_id: int, text: str) -> None:
        """An agent writes in a topic."""
        self.tg.agent_text(thread_id, text)


# --------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_peers() -> AsyncIterator[Peers]:
    """The fakes and the sandbox, served for the whole module (the bot starts once: its imports
    alone take seconds)."""
    async with (
        running_sandbox(Sandbox()) as sandbox,
        running_fake_graph(TOKEN, phone_number_id=PHONE_NUMBER_ID) as graph,
        running_fake_telegram() as telegram,
    ):
        yield Peers(graph, telegram, sandbox)


def bot_env(peers: Peers, port: int) -> dict[str, str]:
    """The service's environment: every peer local, nothing read from a developer's shell."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update(
        PYTHONPATH=str(ROOT),
        WISPHUB_API_URL=peers.sandbox.url,
        WISPHUB_API_KEY=SANDBOX_API_KEY,
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        WHATSAPP_APP_SECRET=APP_SECRET,
        WHATSAPP_VERIFY_TOKEN=VERIFY_TOKEN,
        WHATSAPP_API_URL=peers.graph.base_url,
        TELEGRAM_BOT_TOKEN=peers.telegram.token,
        TELEGRAM_API_URL=peers.telegram.base_url,
        TELEGRAM_AGENTS_CHAT_ID=str(peers.telegram.agents_chat_id),
        REDIS_URL=REDIS_URL,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        BOT_LANGUAGE="es",
        LOG_LEVEL="INFO",
    )
    return env


@contextlib.asynccontextmanager
async def running_bot(peers: Peers, cwd: Path, **env: str) -> AsyncIterator[BotUnderTest]:
    """The service for the block; at the end it must exit 0 on SIGTERM, no secret logged."""
    async with aiohttp.ClientSession() as http:
        bot = BotUnderTest(peers, http, cwd, env)
        try:
            await bot.start()
            yield bot
        finally:
            code = await bot.stop()
    assert code == 0, "the bot did not exit cleanly on SIGTERM:\n" + bot.log_tail()
    leaked = [line for line in bot.output if TOKEN in line or APP_SECRET in line]
    assert not leaked, "a secret reached the log"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_bot(
    shared_peers: Peers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BotUnderTest]:
    """The running service, wired to the module's peers."""
    async with running_bot(shared_peers, tmp_path_factory.mktemp("whatsapp-e2e")) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def bot(shared_bot: BotUnderTest) -> BotUnderTest:
    """The service with a clean slate: empty Redis database, fresh sandbox data, fake reset."""
    await flush_when_unlocked(REDIS_URL)
    shared_bot.peers.sandbox.reset()
    shared_bot.peers.graph.reset()
    return shared_bot


# --------------------------------------------------------------------------- webhook edge


async def test_verification_handshake_echoes_the_challenge(bot: BotUnderTest) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    async with bot.http.get(f"{bot.url}/webhooks/whatsapp", params=query) as response:
        assert response.status == 200
        assert await response.text() == "1158201444"


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    ],
    ids=["wrong-token", "no-token", "wrong-mode"],
)
async def test_verification_with_a_wrong_token_is_refused(
    bot: BotUnderTest, query: dict[str, str]
) -> None:
    async with bot.http.get(f"{bot.url}/webhooks/whatsapp", params=query) as response:
        assert response.status == 403
        assert "1" not in await response.text()


async def test_unsigned_or_badly_signed_calls_are_refused_and_not_handled(
    bot: BotUnderTest,
) -> None:
    graph = bot.peers.graph
    refused = [inbound_text(ANA, f"hola {n}") for n in range(5)]
    bodies = [json.dumps(p).encode() for p in refused]
    assert await bot.post(bodies[0], signature=None) == 403
    assert await bot.post(bodies[1], signature=sign(bodies[1], "another-secret")) == 403
    assert await bot.post(bodies[2], signature=sign(bodies[0], APP_SECRET)) == 403  # other body
    assert await bot.post(bodies[3], signature="sha256=zz") == 403
    assert await bot.post(bodies[4], signature=sign(bodies[4], APP_SECRET)[7:]) == 403  # no prefix
    # The signature is checked before parsing: junk with a bad signature is a 403, not a 400.
    assert await bot.post(b"{not json", signature="sha256=" + "0" * 64) == 403

    # A signed call afterwards is the only one answered (the refused ones were never handled).
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")
    refused_ids = {p["entry"][0]["changes"][0]["value"]["messages"][0]["id"] for p in refused}
    assert not refused_ids & set(graph.reads)
    assert len([m for m in ana.sent if "Soy cliente" in content(m)]) == 1


async def test_malformed_json_is_a_400_and_the_service_keeps_serving(bot: BotUnderTest) -> None:
    assert await bot.post(b"{not json") == 400
    assert await bot.post(b"\xff\xfe\x00garbage") == 400
    assert await bot.post(b"[1, 2, 3]") == 400
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")


async def test_the_webhook_answers_before_the_message_is_handled(bot: BotUnderTest) -> None:
    """Meta wants a 200 at once: handling (here a slow WispHub) happens after the answer."""
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")
    bot.peers.sandbox.add_fault(r"^/clientes/", status=0, delay=1.5)  # slow, then answers
    await ana.press("Soy cliente")
    assert ana.since == []  # the 200 came back while the phone look-up was still waiting
    await ana.expect("nombre completo")


# --------------------------------------------------------------------------- conversations


async def test_known_number_identifies_verifies_and_opens_a_ticket(bot: BotUnderTest) -> None:
    """identify (by phone) → verify → account → fault report → ticket, by buttons and lists."""
    ana = bot.chat(ANA)
    await ana.say("hola")
    menu = await ana.expect("Soy cliente")
    assert menu["interactive"]["type"] == "button"  # 3 options: reply buttons
    await bot.peers.graph.wait_until(lambda: ana.wamids[0] in bot.peers.graph.reads)

    await ana.press("Soy cliente")
    await ana.expect("asociado a este numero.*nombre completo")
    assert not re.search(r"ana|ruiz|calle|hogar|documento", fold(ana.transcript()))

    await ana.say("ana ruiz")
    await ana.expect("Gracias, Ana")
    client_menu = await ana.expect("Estado de cuenta")
    assert client_menu["interactive"]["type"] == "list"  # 6 options: a list message

    await ana.press("Estado de cuenta")
    account = await ana.expect(r"servicio 10")
    assert re.search(r"\$ \d{1,3}(\.\d{3})+", content(account))
    await ana.expect("algo mas")

    await ana.press("Reportar falla")
    categories = await ana.expect("Sin internet")
    assert categories["interactive"]["type"] == "list"  # 4 categories: a list
    await ana.press("Sin internet")
    await ana.expect("responde bien")
    await ana.expect("Sigue igual")
    await ana.press("Sigue igual")
    await ana.expect("pocas palabras")
    await ana.say("No tengo internet desde anoche en ningún equipo")
    await ana.expect("Confirmar")
    await ana.press("Confirmar")
    created = await ana.expect(r"abri el ticket #(\d+)")

    posts = [r for r in bot.peers.sandbox.requests if r.method == "POST" and r.path == "/tickets/"]
    assert len(posts) == 1
    assert posts[0].fields["servicio"] == "10"
    assert "4" in content(created)  # the sandbox numbers tickets from 4800


async def test_unknown_number_is_asked_the_document(bot: BotUnderTest) -> None:
    stranger = bot.chat(STRANGER)
    await stranger.say("Buenas tardes")
    await stranger.expect("Soy cliente")
    await stranger.say("soy cliente")  # typed label works like the button
    await stranger.expect(r"documento \(cedula\)")
    await stranger.say(ANA_DOCUMENT)
    await stranger.expect("nombre completo")
    assert "ana" not in fold(stranger.transcript())
    await stranger.say("Ana María Ruiz")
    await stranger.expect("Gracias, Ana")
    await stranger.say("no me jala el internet")  # free text (issue 13): the fault report
    await stranger.expect("Sigue igual")


async def test_a_turn_is_one_interactive_message(bot: BotUnderTest) -> None:
    """One reply, one bubble: the greeting and its menu, then an answer and the client menu,
    each arrive as ONE interactive message whose body holds the texts (issue 14)."""
    stranger = bot.chat(STRANGER)
    windows: list[int] = []

    async def turn(move: Awaitable[None], pattern: str) -> None:
        await move
        windows.append(stranger.mark)
        await stranger.expect(pattern)

    await turn(stranger.say("hola"), "Soy cliente")
    await turn(stranger.press("Soy cliente"), r"documento \(cedula\)")
    await turn(stranger.say(ANA_DOCUMENT), "nombre")
    await turn(stranger.say("Ana María Ruiz"), "Estado de cuenta")
    await turn(stranger.press("Estado de cuenta"), r"89\.900")
    await turn(stranger.say("menu"), "Estado de cuenta")  # answered: the windows are complete
    sent = stranger.sent
    ends = [*windows[1:], len(sent)]
    turns = [sent[start:end] for start, end in zip(windows, ends, strict=True)]
    assert [len(t) for t in turns] == [1] * len(turns), [[content(m) for m in t] for t in turns]
    greeting, verified, account = turns[0][0], turns[3][0], turns[4][0]
    for message in (greeting, verified, account):
        assert message["type"] == "interactive", message
        assert len(message["interactive"]["body"]["text"]) <= 1024
    assert "\n\n" in greeting["interactive"]["body"]["text"]  # greeting + the menu's prompt
    assert "soy cliente" in fold(content(greeting))
    assert "89.900" in content(account)
    assert "estado de cuenta" in fold(content(account))


async def to_document_question(chat: Chat) -> None:
    """Greeting → Soy cliente → the bot asks for the document (the number matched nobody)."""
    await chat.say("hola")
    await chat.press("Soy cliente")
    await chat.expect(r"documento \(cedula\)")


async def verify_by_number(ana: Chat) -> None:
    """Ana, writing from a number WispHub has on her record: identified without the document,
    verified by her name."""
    await ana.say("hola")
    await ana.press("Soy cliente")
    await ana.expect("asociado a este numero.*nombre completo")
    await ana.say("ana ruiz")
    await ana.expect("Gracias, Ana")


def phone_lookups(bot: BotUnderTest) -> list[str]:
    """The numbers the bot asked WispHub about."""
    return [
        r.query["telefono__contains"]
        for r in bot.peers.sandbox.requests
        if "telefono__contains" in r.query
    ]


async def test_a_contact_card_of_another_number_does_not_identify(bot: BotUnderTest) -> None:
    """Only the sender's own number identifies: Ana's card from a stranger is answered with the
    document question, and cards of unknown numbers are not even looked up (no enumeration)."""
    stranger = bot.chat(STRANGER)
    await to_document_question(stranger)
    cards = [
        inbound_contact(STRANGER, "+57 300 111 2233", contact_wa_id=ANA),
        inbound_contact(STRANGER, "+57 300 111 2233"),
        *(inbound_contact(STRANGER, f"+57 310 555 00{n:02}") for n in range(8)),
    ]
    for card in cards:
        await stranger.send(card)
        await stranger.expect(r"documento \(cedula\)")
        assert "nombre completo" not in fold(stranger.transcript())
    # WispHub was asked about the sender's own number at most (an earlier test may have left
    # it in the bot's look-up cache), never about a card's.
    assert set(phone_lookups(bot)) <= {"3125550000"}
    # The cards spent none of the chat's look-ups: a real document is still answered.
    await stranger.say(ANA_DOCUMENT)
    await stranger.expect("nombre completo")


async def test_failed_phone_and_document_lookups_share_the_chats_budget(
    bot: BotUnderTest,
) -> None:
    """An unknown sender's number is one look-up; four unknown documents make five: locked."""
    stranger = bot.chat(STRANGER)
    await to_document_question(stranger)
    for document in ("11111111", "22222222", "33333333", "44444444"):
        await stranger.say(document)
        await stranger.expect("No encontre")
    await stranger.say(ANA_DOCUMENT)
    await stranger.expect("bloqueada por 30 minutos")
    assert "nombre completo" not in fold(stranger.transcript())


async def test_a_document_locked_by_guessers_stays_open_to_the_holders_own_number(
    bot: BotUnderTest,
) -> None:
    """Five wrong names on Ana's document from two strangers lock it for a third one, but Ana,
    writing from her registered number, still verifies."""
    guessers = [bot.chat("573125550001"), bot.chat("573125550002")]
    for guesser, wrong_names in zip(guessers, (3, 2), strict=True):
        await to_document_question(guesser)
        await guesser.say(ANA_DOCUMENT)
        await guesser.expect("nombre completo")
        for n in range(wrong_names):
            await guesser.say(f"ana lopez {n}")
            await guesser.expect("no coincide|bloqueada")
        await guesser.expect("bloqueada por 30 minutos")

    third = bot.chat("573125550003")
    await to_document_question(third)
    await third.say(ANA_DOCUMENT)
    await third.expect("bloqueada")
    assert "nombre completo" not in fold(third.transcript())

    await verify_by_number(bot.chat(ANA))


async def test_a_redelivered_wamid_is_handled_once(bot: BotUnderTest) -> None:
    ana = bot.chat(ANA)
    payload = inbound_text(ANA, "hola", "wamid.HBgMNTczMDAxMTEyMjMzFQIAEhgUM0VCMA==")
    for _ in range(3):
        await bot.deliver(payload)  # Meta re-delivers when it misses our 200
    await ana.expect("Soy cliente")
    # A later message is the barrier: its reply comes after any reply to the repeats.
    await ana.say("Planes y precios")
    await ana.expect("Nuestros planes")
    menus = [m for m in ana.sent if "Soy cliente" in content(m)]
    assert len(menus) == 1


async def test_statuses_and_junk_are_accepted_and_ignored(bot: BotUnderTest) -> None:
    graph = bot.peers.graph
    junk: list[dict[str, Any]] = [
        status_update(ANA, "wamid.SENT1", "delivered"),
        status_update(ANA, "wamid.SENT1", "read"),
        {"object": "whatsapp_business_account", "entry": "nonsense"},
        {"entry": [{"changes": [{"value": {"messages": [{"type": "text"}]}}]}]},  # no sender
        {},
        webhook(),
    ]
    for payload in junk:
        await bot.deliver(payload)
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")
    assert graph.messages == ana.sent  # nothing was sent for the statuses or the junk
    assert len(ana.sent) == 1  # the greeting with the menu's buttons: one bubble
    assert graph.reads == ana.wamids  # only the customer's message is marked read


async def test_media_gets_the_text_only_note(bot: BotUnderTest) -> None:
    ana = bot.chat(ANA)
    await ana.send(inbound_media(ANA, "sticker", "5550001", mime_type="image/webp"))
    await ana.expect("solo puedo leer mensajes de texto")
    await ana.send(inbound_location(ANA, 4.65, -74.05, "Casa"))
    await ana.expect("solo puedo leer mensajes de texto")
    unsupported = inbound_text(ANA, "x")
    message = unsupported["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message.update(type="unsupported", errors=[{"code": 131051, "title": "Unsupported type"}])
    await ana.send(unsupported)
    await ana.expect("solo puedo leer mensajes de texto")


async def test_a_throttled_send_is_retried(bot: BotUnderTest) -> None:
    graph = bot.peers.graph
    graph.fail(code=130429, count=2, status=400, to=ANA, retry_after=0.2)
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")
    assert graph.attempts == len(graph.messages) + 2


# --------------------------------------------------------------------------- handoff


async def _hand_off(bot: BotUnderTest, agents: Agents) -> tuple[Chat, int]:
    """Ana identifies, verifies and asks for an agent; return her chat and topic."""
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.press("Soy cliente")
    await ana.expect("nombre completo")
    await ana.say("ana ruiz")
    await ana.expect("Hablar con un asesor")
    await ana.press("Hablar con un asesor")
    await ana.expect("Te comunico con un asesor")
    card = await agents.expect("Nueva conversacion . WhatsApp")
    assert card.message_thread_id is not None
    topic = bot.peers.telegram.topics[card.message_thread_id]
    assert "WhatsApp" in topic.name
    return ana, card.message_thread_id


def _agent_post(tg: FakeTelegram, thread: int, **attachment: Any) -> dict[str, Any]:
    """An agent's message with an attachment in a topic, as Telegram sends it."""
    return {
        "message": {
            "message_id": 9000 + len(tg.calls),
            "date": int(time.time()),
            "chat": {"id": tg.agents_chat_id, "type": "supergroup", "is_forum": True},
            "from": {"id": 5001, "is_bot": False, "first_name": "Luis"},
            "message_thread_id": thread,
            "is_topic_message": True,
            **attachment,
        }
    }


def _agent_photo(tg: FakeTelegram, thread: int, file_id: str, caption: str) -> dict[str, Any]:
    """An agent's captioned photo in a topic, as Telegram sends it."""
    size = {"file_id": file_id, "file_unique_id": f"u{file_id}", "width": 9, "height": 9}
    return _agent_post(tg, thread, photo=[size], caption=caption)


async def test_handoff_both_ways(bot: BotUnderTest) -> None:
    agents = Agents(bot)
    ana, thread = await _hand_off(bot, agents)
    card = agents.posts(thread)[0]
    assert "Ana Maria Ruiz Gomez" in fold(card.text or "").title()
    assert TOKEN not in (card.text or "")

    # The customer's text goes to the topic; the bot stays quiet.
    await ana.say("hola, tengo una duda con mi factura")
    await agents.expect("duda con mi factura", thread)

    # Media during a handoff reaches the agents, not the text-only note.
    bot.peers.graph.add_media("7001", b"\xff\xd8\xff fake jpeg", "image/jpeg")
    await ana.send(inbound_media(ANA, "image", "7001"))
    await agents.expect("", thread, method="sendPhoto")

    # An agent's answer reaches the customer on WhatsApp as text.
    agents.write(thread, "Hola Ana, soy Luis. ¿En qué te ayudo?")
    await ana.expect("soy Luis")
    assert "solo puedo leer" not in fold("\n".join(content(m) for m in ana.sent))
    quiet = [m for m in ana.sent[-2:] if "Te comunico" not in content(m)]
    assert [content(m) for m in quiet] == ["Luis (asesor/a): Hola Ana, soy Luis. ¿En qué te ayudo?"]

    # An agent's photo reaches the customer as an image with its caption: a Telegram copy
    # cannot reach WhatsApp, so the file is downloaded from Telegram and uploaded to Graph.
    tg, graph = bot.peers.telegram, bot.peers.graph
    tg.add_file("AgAD-f", b"\xff\xd8\xff agent jpeg", "photos/file_7.jpg")
    first = len(ana.sent)
    tg.push_update(_agent_photo(tg, thread, "AgAD-f", "la factura"))
    image = await ana.expect(r"\[image\]")
    assert image["image"]["caption"] == "Luis (asesor/a): la factura"
    assert graph.uploads[image["image"]["id"]] == (b"\xff\xd8\xff agent jpeg", "image/jpeg")

    # A photo that cannot be downloaded from Telegram: the agent is told, nothing is sent.
    before, attempts = len(ana.sent), graph.attempts
    tg.push_update(_agent_photo(tg, thread, "AgAD-unknown", "otra foto"))
    await agents.expect("No pude entregar", thread)
    assert len(ana.sent) == before
    assert graph.attempts == attempts
    # A topic's messages are relayed in order, so the photo's reply was complete by then: the
    # caption came with the image only, not again as a text.
    assert [content(m) for m in ana.sent[first:]] == ["[image]"]

    # /cerrar hands the conversation back to the bot and closes the topic.
    agents.write(thread, "/cerrar")
    await ana.expect("El asesor cerro la conversacion")
    await agents.expect("Atencion cerrada", thread)
    await bot.peers.telegram.wait_for_calls("closeForumTopic", 1)
    assert bot.peers.telegram.topics[thread].closed
    # The rating question comes last (issue 15); the client menu above it still answers.
    await ana.expect("Como calificarias la atencion")
    await ana.say("Estado de cuenta")
    await ana.expect("Valor mensual")


async def test_agents_voice_notes_videos_and_stickers_reach_the_whatsapp_customer(
    bot: BotUnderTest,
) -> None:
    """What agents really send besides text: each is fetched from Telegram, uploaded to Graph
    in a format WhatsApp plays, and sent; a caption WhatsApp cannot show comes as a text."""
    agents = Agents(bot)
    ana, thread = await _hand_off(bot, agents)
    tg, graph = bot.peers.telegram, bot.peers.graph
    file = {"file_unique_id": "u", "duration": 3}

    tg.add_file("voice-1", b"OggS opus voice", "voice/file_1.oga")
    first = len(ana.sent)
    tg.push_update(
        _agent_post(tg, thread, voice={"file_id": "voice-1", **file}, caption="escucha esto")
    )
    audio = await ana.expect(r"\[audio\]")
    assert graph.uploads[audio["audio"]["id"]] == (b"OggS opus voice", "audio/ogg")
    await ana.expect("Luis \\(asesor/a\\): escucha esto")  # a voice note shows no caption

    tg.add_file("video-1", b"mp4 video", "videos/file_2.mp4")
    video = {"file_id": "video-1", "width": 9, "height": 9, **file}
    tg.push_update(_agent_post(tg, thread, video=video, caption="asi se reinicia el router"))
    sent = await ana.expect(r"\[video\]")
    assert sent["video"]["caption"] == "Luis (asesor/a): asi se reinicia el router"
    assert graph.uploads[sent["video"]["id"]] == (b"mp4 video", "video/mp4")

    tg.add_file("sticker-1", b"RIFF webp", "stickers/file_3.webp")
    sticker = {"file_id": "sticker-1", "file_unique_id": "s", "type": "regular", "width": 512}
    sticker |= {"height": 512, "is_animated": False, "is_video": False}
    tg.push_update(_agent_post(tg, thread, sticker=sticker))
    sent = await ana.expect(r"\[sticker\]")
    assert graph.uploads[sent["sticker"]["id"]] == (b"RIFF webp", "image/webp")
    await ana.expect(r"^Luis \(asesor/a\)$")  # a sticker shows no caption: the signature as text
    assert [content(m) for m in ana.sent[first:]] == [
        "[audio]",
        "Luis (asesor/a): escucha esto",
        "[video]",
        "[sticker]",
        "Luis (asesor/a)",
    ]

    # An animated sticker has no WhatsApp form: the agent is told, the customer gets nothing.
    before = len(ana.sent)
    tg.push_update(_agent_post(tg, thread, sticker=sticker | {"is_animated": True}))
    await agents.expect("No pude entregar", thread)
    assert len(ana.sent) == before


async def test_agent_is_told_when_the_24_hour_window_is_closed(bot: BotUnderTest) -> None:
    """After a restart the window is unknown to the bot: Graph's 131047 decides, the agent is
    told in the topic, and the handoff and the dedupe marks survive the restart (Redis)."""
    agents = Agents(bot)
    ana, thread = await _hand_off(bot, agents)
    waiting = inbound_text(ANA, "sigo esperando")
    await bot.deliver(waiting)
    await agents.expect("sigo esperando", thread)

    await bot.restart()
    graph = bot.peers.graph
    graph.close_window(ANA)
    await bot.deliver(waiting)  # Meta re-delivers a message from before the restart
    before, attempts = len(ana.sent), graph.attempts
    agents.write(thread, "Hola Ana, ¿sigues ahí?")
    note = await agents.expect("ventana de 24 horas", thread)
    assert "No pude entregar" in (note.text or "")
    assert len(ana.sent) == before  # nothing reached the customer as free text
    assert graph.attempts == attempts + 1  # 131047 is final: not retried
    assert len([m for m in agents.posts(thread) if m.text == "sigo esperando"]) == 1

    # The customer writes again: the window is open, the agent's next message goes through,
    # and the failed relay was not kept to be re-sent behind the agent's back.
    graph.closed_windows.clear()
    await ana.say("aquí estoy")
    await agents.expect("aqui estoy", thread)
    agents.write(thread, "Perfecto, te ayudo")
    await ana.expect("Perfecto, te ayudo")
    assert not [m for m in ana.sent if "sigues ahi" in fold(content(m))]


# --------------------------------------------------------------------------- real shapes

SHAPES = fixture("whatsapp/real_shapes.yaml")
BSUID = SHAPES["username_text"]["contacts"][0]["user_id"]  # "US.13491208655302741918"
ANA_NEW = "573009998877"  # Ana's number after she changed it (number_changed)


def ignored(bot: BotUnderTest) -> list[dict[str, Any]]:
    """The bot's log lines for messages it did not handle, parsed."""
    lines = [json.loads(line) for line in bot.output if line.startswith("{")]
    return [line for line in lines if line["msg"].startswith("whatsapp message ignored")]


async def test_a_username_user_without_a_number_is_answered_by_business_scoped_id(
    bot: BotUnderTest,
) -> None:
    """No ``from``, only ``from_user_id``: handled like any message, keyed by the BSUID,
    answered with ``recipient`` (Graph takes a BSUID there, a phone in ``to``), no phone
    look-up, and the agents' card says there is no number."""
    graph, agents = bot.peers.graph, Agents(bot)
    user = bot.chat(BSUID)
    first = from_shape(SHAPES["username_text"])
    user.wamids.append(first["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
    await bot.deliver(first)
    await user.expect("Soy cliente")
    await graph.wait_until(lambda: user.wamids[0] in graph.reads)
    assert all(m["recipient"] == BSUID and "to" not in m for m in user.sent)

    await user.press("Soy cliente")
    await user.expect(r"documento \(cedula\)")  # no number to look up: the document is asked
    assert phone_lookups(bot) == []
    await user.say("asesor")
    await user.expect("Te comunico con un asesor")
    card = await agents.expect("Nueva conversacion . WhatsApp")
    assert "usuario de whatsapp sin numero visible" in fold(card.text or "")
    assert "sin verificar (Ana)" in (card.text or "")  # the profile name is still shown
    assert BSUID not in "\n".join(bot.output)  # logged by pseudonym only


async def test_a_message_with_both_the_number_and_the_user_id_keeps_keying_by_phone(
    bot: BotUnderTest,
) -> None:
    ana = bot.chat(ANA)
    await ana.send(from_shape(SHAPES["phone_and_user_id_text"]))
    await ana.expect("Soy cliente")
    await ana.press("Soy cliente")
    await ana.expect("asociado a este numero.*nombre completo")  # identified by her number
    assert all(m["to"] == ANA and "recipient" not in m for m in ana.sent)


async def test_reactions_edits_revokes_and_system_notices_get_no_reply(bot: BotUnderTest) -> None:
    ana = bot.chat(ANA)
    await ana.say("hola")
    await ana.expect("Soy cliente")
    before = len(ana.sent)
    for name in ("reaction", "edit", "revoke", "identity_changed"):
        await bot.deliver(from_shape(SHAPES[name]))
    # A later message is the barrier: its reply comes after any reply to the four.
    await ana.say("Planes y precios")
    await ana.expect("Nuestros planes")
    said = fold("\n".join(content(m) for m in ana.sent[before:]))
    assert "solo puedo leer" not in said
    assert "no entendi" not in said
    assert said.count("nuestros planes") == 1


async def test_a_reaction_or_an_edit_during_a_handoff_is_a_line_in_the_topic(
    bot: BotUnderTest,
) -> None:
    agents = Agents(bot)
    ana, thread = await _hand_off(bot, agents)
    before = len(ana.sent)
    await bot.deliver(from_shape(SHAPES["reaction"]))
    await agents.expect("El cliente reacciono con 👍", thread)
    await bot.deliver(from_shape(SHAPES["edit"]))
    await agents.expect("El cliente edito un mensaje: perdon, quise decir desde el lunes", thread)
    await ana.say("gracias")
    await agents.expect("gracias", thread)
    assert len(ana.sent) == before  # the customer was answered nothing


async def test_a_number_change_moves_the_conversation_and_its_topic(bot: BotUnderTest) -> None:
    """Ana, handed off, moves to a new number: her session and topic follow it; the agent's
    answer reaches the new number."""
    agents = Agents(bot)
    _, thread = await _hand_off(bot, agents)
    await bot.deliver(from_shape(SHAPES["number_changed"]))
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(WAIT):
            while not await client.exists(f"wispbot:conv:whatsapp:{ANA_NEW}"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert not await client.exists(f"wispbot:conv:whatsapp:{ANA}")
    finally:
        await client.aclose()

    moved = bot.chat(ANA_NEW)
    await moved.say("ya tengo número nuevo")
    await agents.expect("ya tengo numero nuevo", thread)  # the same topic, still handed off
    agents.write(thread, "Perfecto, te sigo atendiendo")
    await moved.expect("Perfecto, te sigo atendiendo")
    assert not [m for m in moved.sent if "Soy cliente" in content(m)]


async def test_group_messages_are_ignored(bot: BotUnderTest) -> None:
    graph = bot.peers.graph
    await bot.deliver(from_shape(SHAPES["group_text"]))
    ana = bot.chat(ANA)
    await ana.say("hola")  # the barrier
    await ana.expect("Soy cliente")
    assert len(ana.sent) == 1  # greeting and menu for "hola" (one bubble); nothing for the group
    assert graph.reads == ana.wamids  # the group message was not even marked read


async def test_a_webhook_for_another_phone_number_id_is_ignored_with_one_warning(
    bot: BotUnderTest,
) -> None:
    """One Meta app may serve several numbers: only WHATSAPP_PHONE_NUMBER_ID's are ours."""
    graph = bot.peers.graph
    seen = len(ignored(bot))
    other = "109876543210987"
    payload = inbound_text(ANA, "hola")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = other
    await bot.deliver(payload)
    ana = bot.chat(ANA)
    await ana.say("hola")  # the barrier
    await ana.expect("Soy cliente")
    assert len(ana.sent) == 1  # greeting and menu, one bubble
    assert graph.reads == ana.wamids
    lines = ignored(bot)[seen:]
    assert [(line["reason"], str(line["phone_number_id"])) for line in lines] == [
        ("another phone number id", other)
    ]


async def test_every_dropped_message_leaves_one_log_line_saying_why(bot: BotUnderTest) -> None:
    """Why, and never who: no number, no BSUID, no text in those lines."""
    seen = len(ignored(bot))
    calls = [
        from_shape(SHAPES["group_text"]),
        from_shape(SHAPES["no_sender"]),
        from_shape(SHAPES["revoke"]),
        from_shape(SHAPES["identity_changed"]),
        from_shape(SHAPES["username_text"], phone_number_id="109876543210987"),
    ]
    for payload in calls:
        await bot.deliver(payload)
    ana = bot.chat(ANA)
    await ana.say("hola")  # the barrier: parsing happens before the 200
    await ana.expect("Soy cliente")
    lines = ignored(bot)[seen:]
    assert [line["reason"] for line in lines] == [
        "group message",
        "no sender or message id",
        "revoked message",
        "system message",
        "another phone number id",
    ]
    text = json.dumps(lines)
    for secret in (ANA, ANA[2:], BSUID, "hola a todos", "Ana"):
        assert secret not in text


@pytest.mark.parametrize(
    ("country_code", "wa_id", "telefono"),
    [
        ("52", "5215512345678", "5512345678"),  # Mexico: 521 + 10 digits on WhatsApp
        ("54", "5491123456789", "01123456789"),  # Argentina: 549 + area + number
    ],
    ids=["mexico", "argentina"],
)
async def test_mexican_and_argentine_whatsapp_numbers_find_the_national_record(
    shared_peers: Peers,
    tmp_path: Path,
    country_code: str,
    wa_id: str,
    telefono: str,
) -> None:
    """WispHub holds the national number; WhatsApp sends the mobile form. Each national form
    is searched until one matches: the customer is identified by number, not asked the
    document."""
    sandbox = shared_peers.sandbox
    sandbox.reset()
    shared_peers.graph.reset()
    ana_record = next(c for c in sandbox.clients if c["id_servicio"] == 10)
    ana_record["telefono"] = telefono
    try:
        async with running_bot(shared_peers, tmp_path, DEFAULT_COUNTRY_CODE=country_code) as bot:
            client = aioredis.Redis.from_url(REDIS_URL)
            try:
                await client.flushdb()
            finally:
                await client.aclose()
            await verify_by_number(bot.chat(wa_id))
    finally:
        sandbox.reset()


# --------------------------------------------------------------------------- privacy


async def test_logs_name_no_customer_by_number(bot: BotUnderTest) -> None:
    """Last in the file: the JSON logs of this module's whole run (handoffs, throttled, refused
    and closed-window sends, restarts) never carry a customer's number, whole or national; the
    conversation key is a pseudonym, and ``python -m bot logkey`` finds a customer's lines."""
    graph = bot.peers.graph
    graph.fail(code=131026, status=400, count=1, to=STRANGER)  # "undeliverable": refused
    stranger = bot.chat(STRANGER)
    await stranger.say("hola")
    await stranger.say("hola")
    await stranger.expect("Soy cliente")
    lines = list(bot.output)
    for number in (ANA, STRANGER):
        national = number.removeprefix("57")
        leaked = [line for line in lines if national in line]
        assert not leaked, f"{number} in the log:\n" + "\n".join(leaked[:5])
    env = bot_env(bot.peers, bot.port)
    found = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "logkey",
        "whatsapp",
        f"+{STRANGER}",
        cwd=bot.cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await found.communicate()
    assert found.returncode == 0, err.decode()
    pseudonym = out.decode().strip()
    mine = [json.loads(line) for line in lines if f'"{pseudonym}"' in line]
    assert any(line.get("msg") == "whatsapp sent" for line in mine), pseudonym
    assert all(line["conv"] == pseudonym for line in mine if "conv" in line)
