"""``python -m benchmarks.notices``: a resolved outage told to 5,000 subscribers (issue 15).

wispbot runs as ``python -m bot run`` (webhook mode, Telegram's limits on: 30 messages a second
overall, one a second per chat) against the in-process fake Bot API and WispHub sandbox, with
NOTIFY_POLL_SECONDS=1. The subscribers of router 2 are written as the dialog writes them; the
sandbox then turns the router's outage off. Measured: from that moment to the last subscriber's
notice, against the floor the Telegram limit sets (subscribers / 30 s) times 1.2; and, all the
while, a few customers who keep writing: the p99 of their answers must stay under 300 ms (the
notices go on the low-priority lane).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
from redis.asyncio import Redis

from benchmarks.driver import (
    BenchTelegram,
    BotProcess,
    BotSpec,
    Customers,
    running_peers,
    scratch_dir,
    with_bot,
)
from bot.store.subscriptions import RedisRegistry
from flows.types import ConvKey
from integrations.wisphub.sandbox import Sandbox

ROUTER, SERVICE = 2, 12  # the demo's "OLT Norte" (known outage) and a client behind it
FIRST_CHAT = 5_000_001
TALKERS = 4  # customers writing while the notices go out
TALK_GAP = 2.5  # s between one talker's messages (one reply each: within 1 a second per chat)
P99_LIMIT = 0.3
BASELINE_SECONDS = 15.0
SLACK = 1.2


def p99(latencies: list[float]) -> float:
    """The 99th percentile (s)."""
    if len(latencies) < 2:
        return max(latencies, default=0.0)
    return statistics.quantiles(latencies, n=100)[98]


@dataclass
class NoticeResult:
    """What the run measured."""

    subscribers: int
    rate: float
    seconds: float = 0.0
    told: int = 0
    twice: int = 0
    latencies: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)  # the same talkers before any notice
    unanswered: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def floor(self) -> float:
        """The Telegram limit's floor: subscribers / rate."""
        return self.subscribers / self.rate

    @property
    def p99(self) -> float:
        """The talkers' 99th percentile answer time while the notices went out (s)."""
        return p99(self.latencies)

    @property
    def ok(self) -> bool:
        """Everyone told once within floor x 1.2, the talkers' p99 under 300 ms."""
        return (
            self.told == self.subscribers
            and self.twice == 0
            and self.seconds <= self.floor * SLACK
            and self.p99 < P99_LIMIT
            and self.unanswered == 0
        )


def render(result: NoticeResult) -> str:
    """The result as the README quotes it."""
    return "\n".join(
        [
            f"notices: {result.told}/{result.subscribers} subscribers told once "
            f"({result.twice} twice) in {result.seconds:.1f} s; floor {result.floor:.1f} s at "
            f"{result.rate:g}/s, limit x{SLACK} = {result.floor * SLACK:.1f} s",
            f"concurrent conversation: {len(result.latencies)} answers, p50 "
            f"{statistics.median(result.latencies or [0]) * 1000:.0f} ms, p99 "
            f"{result.p99 * 1000:.0f} ms (limit {P99_LIMIT * 1000:.0f} ms), "
            f"{result.unanswered} unanswered; before the notices (same talkers, same machine): "
            f"{len(result.baseline)} answers, p50 "
            f"{statistics.median(result.baseline or [0]) * 1000:.0f} ms, p99 "
            f"{p99(result.baseline) * 1000:.0f} ms",
            f"verdict: {'PASS' if result.ok else 'FAIL'}",
            *result.errors[:5],
        ]
    )


async def _talk(
    customers: Customers, chat: int, stop: asyncio.Event, result: NoticeResult, first: float
) -> None:
    """One customer writing /start every TALK_GAP s until ``stop``; the answers timed (those
    started before ``first``, when the notices begin, as the baseline)."""
    fake = customers.fake
    while not stop.is_set():
        want = len(fake.by_chat.get(chat, ())) + 1  # a turn is one message (one bubble)
        started = time.monotonic()
        await customers.post(customers.text_update(chat, "/start"))
        if await fake.wait_count(chat, want, 30.0):
            into = result.baseline if started < first else result.latencies
            into.append(fake.by_chat[chat][want - 1].at - started)
        else:
            result.unanswered += 1
        with_gap = TALK_GAP - (time.monotonic() - started)
        if with_gap > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), with_gap)


async def _run(
    bot: BotProcess, fake: BenchTelegram, sandbox: Sandbox, result: NoticeResult
) -> None:
    redis = Redis.from_url(bot.redis_url)
    try:
        registry = RedisRegistry(redis)
        until = time.time() + 3600
        chats = range(FIRST_CHAT, FIRST_CHAT + result.subscribers)
        for chat in chats:
            key = ConvKey("telegram", str(chat))
            await registry.subscribe("outage", str(ROUTER), key, service_id=SERVICE, until=until)
    finally:
        await redis.aclose()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        customers = Customers(fake, bot.webhook_url, http)
        first = time.monotonic() + BASELINE_SECONDS
        talkers = [
            asyncio.create_task(_talk(customers, FIRST_CHAT - 1 - i, stop, result, first))
            for i in range(TALKERS)
        ]
        await asyncio.sleep(BASELINE_SECONDS)  # the talkers alone: the machine's baseline
        started = time.monotonic()
        sandbox.set_outage(ROUTER, False)
        deadline = started + result.floor * SLACK * 2 + 30
        last = started
        for chat in chats:
            if not await fake.wait_count(chat, 1, max(0.0, deadline - time.monotonic())):
                result.errors.append(f"chat {chat}: no notice")
                break
            last = max(last, fake.by_chat[chat][0].at)
        result.seconds = last - started
        await asyncio.sleep(3.0)  # three more ticks: nobody is told twice
        stop.set()
        await asyncio.gather(*talkers)
    counts = [len(fake.by_chat.get(chat, ())) for chat in chats]
    result.told = sum(1 for n in counts if n == 1)
    result.twice = sum(1 for n in counts if n > 1)


async def bench_notices(
    subscribers: int = 5000, rate: float = 30.0, redis_db: int = 11
) -> NoticeResult:
    """Run the benchmark once."""
    result = NoticeResult(subscribers, rate)
    env = {"NOTIFY_POLL_SECONDS": "1", "TELEGRAM_GLOBAL_RATE": f"{rate:g}"}
    spec = BotSpec("wispbot", "bot", ("run",), redis_db, env, "Telegram limits")
    sandbox = Sandbox()
    async with running_peers(sandbox) as (fake, _):

        async def body(bot: BotProcess) -> None:
            await _run(bot, fake, sandbox, result)

        await with_bot(spec, fake, sandbox, scratch_dir(), body)
    return result


def main() -> int:
    """Run it and print the figures (exit 1 when a bound is missed)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args()
    result = asyncio.run(bench_notices(args.subscribers, args.rate))
    print(render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
