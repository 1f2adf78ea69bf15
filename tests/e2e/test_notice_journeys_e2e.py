"""Notices as customers live them, end to end (issue 15): two ``python -m bot run`` processes on
one Redis (database 13, flushed once), the sandbox and the fake Bot API; NOTIFY_POLL_SECONDS=1.

Every subscription here is written by the conversation itself (a fault report, the account's
reminder offer, the outage answer), and each notice is asserted as the customer sees it:

- a ticket the bot opened is resolved in the sandbox: "¿Se solucionó tu problema?" exactly once,
  "Sí", the rating buttons, a rating, counted in ``wispbot_csat_total`` (either process);
- a payment reminder: the service's "today" is the machine's, so the clock is driven through the
  sandbox's cut-off date (``fecha_corte``) instead: three days ahead nothing is sent, two days
  ahead (REMINDER_DAYS_BEFORE=2) the reminder goes out once, however many ticks follow;
- "/silenciar": an opted-out subscriber gets nothing when the outage ends (counted as
  ``wispbot_notices_skipped_total{reason="opted_out"}``), while another subscriber is told;
- a ticket an agent filed with /ticket: after the handoff was closed, the rating given when the
  ticket is resolved is posted in the customer's (closed) topic;
- the console (``python -m bot chat``, piped stdin kept open, memory sessions) prints the
  outage notice when it arrives.

Waits are bounded and generous (the machine is busy); "nothing more" is asserted after several
poll intervals of quiet, never from a tight margin.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import (
    BotProcess,
    Chat,
    bot_env,
    fold,
    free_port,
    identify,
    launched,
    open_handoff,
    running,
    wait_for_text,
)
from telegram_api import FakeTelegram

from bot.store.subscriptions import RedisRegistry
from flows.types import ConvKey
from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA = ("1020304050", "ana maria ruiz", "Ana")  # service 10, router 1: no outage
LUZ = ("52123456", "luz marina pena", "Luz")  # service 12, router 2 "OLT Norte": an outage
ROUTER, SERVICE = 2, 12
NOTICE_SECONDS = 45.0  # a notice reaches its customer within this (ticks of 1 s, busy machine)
QUIET_SECONDS = 5.0  # five more ticks: any repeat would have been sent by then
TZ = ZoneInfo("America/Bogota")  # the service's default TIMEZONE

_chat_ids = iter(range(840_001, 850_000))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bots(
    request: pytest.FixtureRequest,
    fake: FakeTelegram,
    sandbox: Sandbox,
    redis_client: aioredis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, BotProcess]]:
    """Two processes of the service on one Redis, polling WispHub every second."""
    await redis_client.flushdb()
    workdir = tmp_path_factory.mktemp("notice-journeys")
    extra = {"NOTIFY_POLL_SECONDS": "1", "REMINDER_DAYS_BEFORE": "2"}
    pair = {
        name: BotProcess(
            f"journeys-{name}", bot_env(fake, sandbox.url, free_port(), **extra), workdir
        )
        for name in ("a", "b")
    }
    async with launched(pair, str(request.path)):
        yield pair


@pytest_asyncio.fixture(loop_scope="module")
async def ready(bots: dict[str, BotProcess], sandbox: Sandbox) -> dict[str, BotProcess]:
    """Both processes running; the sandbox's starting data back."""
    for bot in bots.values():
        await running(bot)
    sandbox.reset()
    return bots


def _chat(fake: FakeTelegram, first_name: str) -> Chat:
    return Chat(fake, next(_chat_ids), first_name)


def _count(chat: Chat, pattern: str) -> int:
    return sum(1 for m in chat.messages() if re.search(fold(pattern), fold(m.text or "")))


async def _metric(bots: dict[str, BotProcess], line_start: str) -> float:
    """A counter's value summed over both processes (either may have run the turn or tick)."""
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for bot in bots.values():
            async with http.get(f"{bot.url}/metrics") as response:
                text = await response.text()
            for line in text.splitlines():
                if line.startswith(line_start):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def _metric_reaches(bots: dict[str, BotProcess], line_start: str, want: float) -> float:
    deadline = time.monotonic() + NOTICE_SECONDS
    while (value := await _metric(bots, line_start)) < want:
        assert time.monotonic() < deadline, f"{line_start} stayed at {value}, not {want}"
        await asyncio.sleep(0.5)
    return value


def _set_cutoff(sandbox: Sandbox, service_id: int, days_ahead: int, balance: str) -> str:
    """Give the service a pending balance and a cut-off ``days_ahead`` of the ISP's today."""
    day = datetime.now(TZ).date() + timedelta(days=days_ahead)
    for client in sandbox.clients:
        if int(client["id_servicio"]) == service_id:
            client["saldo"] = balance
            client["fecha_corte"] = f"{day.day}/{day.month}/{day.year}"
            return day.isoformat()
    raise AssertionError(f"no service {service_id} in the sandbox")


async def test_a_resolved_ticket_asks_once_and_records_the_rating(
    ready: dict[str, BotProcess], fake: FakeTelegram, sandbox: Sandbox
) -> None:
    chat = _chat(fake, ANA[2])
    await identify(chat, *ANA)
    chat.press("Reportar falla")
    await chat.expect("Sin internet")
    chat.press("Sin internet")
    await chat.expect("Sigue igual")
    chat.press("Sigue igual")
    await chat.expect("pocas palabras")
    chat.say("No tengo internet desde anoche en ningún equipo")
    await chat.expect("Confirmar")
    chat.press("Confirmar")
    opened = await chat.expect(r"abri el ticket #\d+")
    await chat.expect("Te avisaremos por aqui cuando cambie su estado")
    match = re.search(r"#(\d+)", opened.text or "")
    assert match is not None, chat.transcript()
    ticket = int(match.group(1))

    await asyncio.sleep(2.5)  # ticks run while the ticket is new: nothing is told
    assert _count(chat, "se soluciono tu problema") == 0, chat.transcript()
    assert sandbox.set_ticket_status(ticket, "3")  # Resuelto
    chat.mark()
    await chat.expect(rf"ticket #{ticket} figura como resuelto", timeout=NOTICE_SECONDS)
    await asyncio.sleep(QUIET_SECONDS)
    assert _count(chat, "se soluciono tu problema") == 1, chat.transcript()

    before = await _metric(ready, 'wispbot_csat_total{score="4"}')
    chat.press("Sí")
    await chat.expect("como calificarias la atencion")
    chat.press("4")
    await chat.expect("gracias por tu calificacion")
    chat.press("Omitir")
    await chat.expect("gracias por tu calificacion")
    await _metric_reaches(ready, 'wispbot_csat_total{score="4"}', before + 1)
    # Asked once: the subscription ended with the question, later ticks ask nothing more.
    await asyncio.sleep(QUIET_SECONDS)
    assert _count(chat, "se soluciono tu problema") == 1, chat.transcript()


async def test_a_payment_reminder_goes_out_once_on_the_right_day(
    ready: dict[str, BotProcess], fake: FakeTelegram, sandbox: Sandbox
) -> None:
    far = _set_cutoff(sandbox, 10, days_ahead=3, balance="89900.00")
    chat = _chat(fake, ANA[2])
    await identify(chat, *ANA)
    chat.press("Estado de cuenta")
    await chat.expect("avise antes de tu fecha de corte")
    chat.press("Sí")
    await chat.expect("te avisare unos dias antes")

    # Three days before the cut-off (one more than REMINDER_DAYS_BEFORE): ticks send nothing.
    await asyncio.sleep(QUIET_SECONDS)
    assert _count(chat, "Recordatorio") == 0, (far, chat.transcript())

    # The cut-off two days ahead: today is the right day, and the reminder goes out once.
    due = _set_cutoff(sandbox, 10, days_ahead=2, balance="89900.00")
    chat.mark()
    await chat.expect("Recordatorio: tu fecha de corte", timeout=NOTICE_SECONDS)
    await asyncio.sleep(QUIET_SECONDS)
    assert _count(chat, "Recordatorio") == 1, (due, chat.transcript())
    assert _count(chat, "/silenciar") >= 1, "the notice does not say how to stop them"


async def test_opting_out_stops_the_outage_notice(
    ready: dict[str, BotProcess],
    fake: FakeTelegram,
    sandbox: Sandbox,
    redis_client: aioredis.Redis,
) -> None:
    luz = _chat(fake, LUZ[2])
    await identify(luz, *LUZ)
    luz.press("Reportar falla")
    await luz.expect("Te avisaremos cuando se resuelva")
    luz.say("/silenciar")
    await luz.expect("no te enviare mas avisos")

    # Another customer of the same router, still subscribed: proof the tick ran.
    other = _chat(fake, "Pedro")
    await RedisRegistry(redis_client).subscribe(
        "outage",
        str(ROUTER),
        ConvKey("telegram", str(other.id)),
        service_id=SERVICE,
        until=time.time() + 3600,
    )
    skipped = 'wispbot_notices_skipped_total{reason="opted_out"}'
    before = await _metric(ready, skipped)
    luz.mark()
    sandbox.set_outage(ROUTER, False)
    await other.expect("se restablecio", timeout=NOTICE_SECONDS)
    await _metric_reaches(ready, skipped, before + 1)
    await asyncio.sleep(QUIET_SECONDS)
    assert luz.window() == [], luz.transcript()
    assert _count(other, "se restablecio") == 1, other.transcript()


async def test_the_rating_of_a_ticket_opened_in_a_handoff_reaches_the_agents_topic(
    ready: dict[str, BotProcess], fake: FakeTelegram, sandbox: Sandbox
) -> None:
    """The agent files the ticket with /ticket and closes the conversation; when the ticket is
    resolved, the customer's rating is posted in their topic."""
    agents = fake.agents_chat_id
    chat = _chat(fake, ANA[2])
    await identify(chat, *ANA)
    thread = (await open_handoff(chat, fake)).message_thread_id
    assert thread is not None
    chat.mark()
    fake.agent_text(thread, "/ticket revisar la antena, no hay señal")
    opened = await chat.expect(r"Un asesor abrio el ticket #\d+")
    match = re.search(r"#(\d+)", opened.text or "")
    assert match is not None, chat.transcript()
    ticket = int(match.group(1))
    fake.agent_text(thread, "/cerrar")
    await chat.expect("El asesor cerro la conversacion")
    await chat.expect("como calificarias la atencion")  # the closed handoff's own rating
    chat.press("5")
    await wait_for_text(fake, agents, r"Calificacion del cliente: 5/5", thread_id=thread)
    await chat.expect("gracias por tu calificacion")
    chat.press("Omitir")
    await chat.expect("gracias por tu calificacion")

    notes = len(fake.sent(agents))
    assert sandbox.set_ticket_status(ticket, "4")  # Cerrado
    chat.mark()
    await chat.expect(rf"ticket #{ticket} figura como resuelto", timeout=NOTICE_SECONDS)
    chat.press("Sí")
    await chat.expect("como calificarias la atencion")
    chat.press("3")
    await wait_for_text(fake, agents, r"Calificacion del cliente: 3/5", notes, thread_id=thread)
    await asyncio.sleep(QUIET_SECONDS)
    assert _count(chat, "se soluciono tu problema") == 1, chat.transcript()


async def _printed(stdout: asyncio.StreamReader, seen: list[str], pattern: str) -> None:
    """Read the console's output (bounded) until a line matches ``pattern``."""
    deadline = time.monotonic() + NOTICE_SECONDS
    while not any(re.search(fold(pattern), fold(line)) for line in seen):
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            line = await asyncio.wait_for(stdout.readline(), timeout=left)
        except TimeoutError:
            msg = f"the console never printed {pattern!r}:\n" + "".join(seen)
            raise AssertionError(msg) from None
        if not line:
            raise AssertionError(f"the console ended before {pattern!r}:\n" + "".join(seen))
        seen.append(line.decode())


async def test_the_console_prints_a_notice_as_it_arrives(sandbox: Sandbox) -> None:
    """``python -m bot chat`` with piped stdin (kept open, nothing more typed), against this
    sandbox, sessions in memory: the outage notice is printed when the outage ends."""
    sandbox.reset()
    env = bot_env(None, sandbox.url, free_port(), NOTIFY_POLL_SECONDS="1")
    env.pop("REDIS_URL")  # the console's own memory: the two services above never see it
    chat = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert chat.stdin is not None
    assert chat.stdout is not None
    seen: list[str] = []
    try:
        chat.stdin.write(f"Soy cliente\n{LUZ[0]}\n{LUZ[1]}\nReportar falla\n".encode())
        await chat.stdin.drain()
        await _printed(chat.stdout, seen, "Te avisaremos cuando se resuelva")
        told = len(seen)
        sandbox.set_outage(ROUTER, False)
        await _printed(chat.stdout, seen, "se restablecio")
        assert not any("se restablecio" in fold(line) for line in seen[:told]), "".join(seen)
        chat.stdin.close()
        assert await asyncio.wait_for(chat.wait(), timeout=NOTICE_SECONDS) == 0, "".join(seen)
    finally:
        if chat.returncode is None:
            chat.kill()
            await chat.wait()
