"""The free-text conversation of ``make bench`` (issue 13): the customer types everything.

``hola`` → ``soy cliente`` → document → name → ``cuanto debo?`` → ``gracias``, on fresh chats,
against both bots. How many replies each message gets depends on the bot (and, for wispbot, on
how far its free-text understanding has come: a message it does not understand yet is answered
"no entendí" with the options), so each bot's counts are learned first from one conversation
(the next reply awaited until the chat stays quiet), then the measured run uses them, closed
loop as the other runs. Understanding's own CPU per message is ``benchmarks.understand``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import aiohttp

from benchmarks.data import Customer
from benchmarks.driver import BotProcess, Customers, RunResult, Step

FREE_TEXT = (
    Step("text", "hola", 0, "Soy cliente"),
    Step("text", "soy cliente", 0, "documento"),
    Step("text", "{document}", 0, "nombre"),
    Step("text", "{name}", 0, "Reportar falla"),
    # What these two get depends on the bot's understanding: no expectation.
    Step("text", "cuanto debo?", 0),
    Step("text", "gracias", 0),
)
QUIET = 0.5  # seconds without a new reply that end a message's answer while counting
FIRST_REPLY_TIMEOUT = 10.0


async def learn_replies(bot: BotProcess, customer: Customer, steps: Sequence[Step]) -> list[Step]:
    """The steps with each one's reply count, as this bot answers them (one conversation)."""
    fake = bot.fake
    chat = customer.chat_id
    learned = []
    async with aiohttp.ClientSession() as http:
        customers = Customers(fake, bot.webhook_url, http)
        for step in steps:
            before = len(fake.by_chat.get(chat, ()))
            value = step.value.format(document=customer.document, name=customer.name)
            await customers.post(customers.text_update(chat, value))
            if not await fake.wait_count(chat, before + 1, FIRST_REPLY_TIMEOUT):
                msg = f"{bot.spec.label} did not answer {value!r}"
                raise RuntimeError(msg)
            count, since = len(fake.by_chat[chat]), time.monotonic()
            while time.monotonic() - since < QUIET:
                await asyncio.sleep(0.05)
                if len(fake.by_chat[chat]) != count:
                    count, since = len(fake.by_chat[chat]), time.monotonic()
            learned.append(replace(step, replies=count - before))
    return learned


def counts(steps: Sequence[Step]) -> str:
    """Replies per message, e.g. ``2,1,1,2,1,1``."""
    return ",".join(str(s.replies) for s in steps)


def render(bots: Sequence[tuple[str, RunResult | None, Sequence[Step]]]) -> list[str]:
    """The free-text section of the report: each bot's figures and wispbot/peer."""
    runs = [(label, run, steps) for label, run, steps in bots if run is not None]
    if not runs:
        return []
    lines = [
        "",
        "free text (hola -> soy cliente -> document -> name -> cuanto debo? -> gracias, every "
        "message typed; replies per message learned per bot: "
        + "; ".join(f"{label} {counts(steps)}" for label, _, steps in runs)
        + "):",
    ]
    w = runs[0][1]
    p = runs[1][1] if len(runs) > 1 else None

    def cpu(r: RunResult) -> float:
        return r.cpu_seconds * 1000 / r.answered if r.answered else float("nan")

    rows: list[tuple[str, Callable[[RunResult], float], str, bool]] = [
        ("messages/s", lambda r: r.rate, "{:.0f}", True),
        ("reply latency p50 ms", lambda r: r.percentile(50) * 1000, "{:.0f}", True),
        ("reply latency p99 ms", lambda r: r.percentile(99) * 1000, "{:.0f}", True),
        ("bot CPU ms/message", cpu, "{:.2f}", True),
        ("unanswered (10 s)", lambda r: r.unanswered, "{}", False),
        ("wrong answers", lambda r: r.unexpected, "{}", False),
        ("conversations completed", lambda r: r.completed, "{}", False),
    ]
    head = "  " + " " * 24 + "".join(f"{label:>12}" for label, _, _ in runs)
    lines.append(head + ("  wispbot/peer" if p else ""))
    for title, get, fmt, ratio in rows:
        cells = "".join(f"{fmt.format(get(r)):>12}" for _, r, _ in runs)
        tail = ""
        if p is not None and ratio:
            tail = f"  {get(w) / get(p):>11.2f}x" if get(p) else "  n/a"
        lines.append(f"  {title:<24}{cells}{tail}")
    return lines
