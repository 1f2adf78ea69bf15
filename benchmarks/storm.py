"""The Telegram-limit storm (issue 14): many customers write at once to wispbot, its Telegram
pacing on, against a fake Bot API that enforces Telegram's 30 messages a second over all chats
(one more is a 429 with ``retry_after``).

Every customer must be answered, no 429 provoked, and the last customer answered within 1.1x
of the time the limit allows: the floor is the messages the bot sent / 30 s. A warm-up (a few
customers, then a second's pause so the window is empty) keeps the bot's first-call costs out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import customers, sandbox_data
from benchmarks.driver import (
    BotProcess,
    RunResult,
    Step,
    met,
    run_load,
    running_peers,
    wispbot_spec,
    with_bot,
)
from integrations.wisphub.sandbox import Sandbox

TELEGRAM_RATE = 30  # messages a second over all chats (Bot API FAQ)
TARGET = 1.1  # the last answer within this many times the floor
WARMUP = 5
GREETING = (Step("text", "/start", 2, "Soy cliente"),)


@dataclass
class StormResult:
    """What the storm measured."""

    customers: int
    run: RunResult

    @property
    def delivered(self) -> int:
        """Messages the bot put in chats (sends not refused)."""
        return self.run.sends - self.run.refusals

    @property
    def floor(self) -> float:
        """Seconds the limit allows for those messages: delivered / 30."""
        return self.delivered / TELEGRAM_RATE

    @property
    def last_answer(self) -> float:
        """Seconds from the storm's first update to the last customer's answer."""
        return self.run.elapsed

    @property
    def ratio(self) -> float:
        """The last answer's time over the floor."""
        return self.last_answer / self.floor if self.floor else float("nan")

    @property
    def everyone_answered(self) -> bool:
        """Every customer got their answer, as expected."""
        run = self.run
        return run.completed == run.conversations == self.customers and run.unanswered == 0


async def storm_run(
    count: int, *, redis_db: int, workdir: Path, log_level: str = "WARNING"
) -> StormResult:
    """``count`` customers send /start at the same moment; wispbot paces as Telegram requires."""
    sandbox = Sandbox(sandbox_data(0))
    async with running_peers(sandbox) as (fake, inflight):
        fake.overall_limit(TELEGRAM_RATE, 1.0)

        async def body(bot: BotProcess) -> RunResult:
            warm = [[c] for c in customers(WARMUP, offset=count)]
            await run_load(bot, sandbox, inflight, "storm warm-up", warm, GREETING)
            await asyncio.sleep(1.1)  # the window empties: the storm starts with all of it
            plan = [[c] for c in customers(count)]
            # Nobody is unanswered for waiting their turn: the limit makes the last one wait.
            wait = 3 * count / TELEGRAM_RATE + 15
            return await run_load(
                bot,
                sandbox,
                inflight,
                "storm",
                plan,
                GREETING,
                deadline=wait + 30,
                reply_timeout=wait,
            )

        run = await with_bot(
            wispbot_spec(pacing=True, redis_db=redis_db),
            fake,
            sandbox,
            workdir,
            body,
            log_level=log_level,
        )
    return StormResult(count, run)


def storm_lines(storm: StormResult) -> list[str]:
    """The storm's figures, for the report."""
    run = storm.run
    return [
        f"Telegram-limit storm (wispbot, Telegram pacing on): {storm.customers} customers send "
        f"/start at once; the fake Bot API allows {TELEGRAM_RATE} messages/s over all chats "
        "(429 + retry_after beyond)",
        f"  answered {run.answered}/{run.messages}, conversations completed {run.completed}/"
        f"{run.conversations}, wrong answers {run.unexpected}",
        f"  Bot API sends {run.sends} ({run.sends_per_message:.2f}/customer message), "
        f"429s provoked {run.refusals}",
        f"  last customer answered after {storm.last_answer:.2f} s; the limit allows "
        f"{storm.floor:.2f} s ({storm.delivered} messages / {TELEGRAM_RATE}/s) -> "
        f"{storm.ratio:.2f}x",
        f"  targets: everyone answered -> {met(storm.everyone_answered)}; no 429 -> "
        f"{met(run.refusals == 0)}; within {TARGET}x of the limit -> {met(storm.ratio <= TARGET)}",
    ]
