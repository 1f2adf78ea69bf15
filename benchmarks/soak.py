"""``python -m benchmarks.soak`` (``make soak``): does wispbot grow with the customers it serves?

20,000 messages over 2,000 conversations (by default), each a different customer, through the
real service (``python -m bot run``, webhook mode) against the local fake Bot API, the WispHub
sandbox and Redis, as in ``make bench``. Each conversation walks identification (with one wrong
name first: a failed verification), the account, a handoff to an agent (a forum topic) and back,
the exit, and a new greeting. After the warm-up and after each quarter it prints the bot
process's resident memory (RSS) and the Redis keys; at the end the keys by kind with how many
have no TTL. Every key must have one: nothing may be kept for ever per customer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from benchmarks.data import customers, sandbox_data
from benchmarks.driver import (
    BotProcess,
    RunResult,
    Step,
    run_load,
    running_peers,
    scratch_dir,
    split,
    wispbot_spec,
    with_bot,
)
from integrations.wisphub.sandbox import Sandbox

SOAK = (
    Step("text", "/start", 2, "Soy cliente"),
    Step("press", "Soy cliente", 1, "documento"),
    Step("text", "{document}", 1, "nombre"),
    Step("text", "Pedro Nadie", 1, "no coincide"),  # a failed verification: counted
    Step("text", "{name}", 2, "Reportar falla"),
    Step("press", "Estado de cuenta", 2, "algo más"),
    Step("press", "Hablar con un asesor", 1, "asesor"),  # a forum topic for the customer
    Step("text", "/cancelar", 2, "algo más"),
    Step("press", "Salir", 2, "Soy cliente"),
    Step("text", "/start", 2, "Soy cliente"),
)
WARMUP = 20
SAMPLES = 4  # RSS and keys after each quarter


@dataclass
class Options:
    """What to run."""

    conversations: int = 2000
    workers: int = 100  # conversations in flight at once
    redis_db: int = 6  # not make bench's (11) nor the tests'
    log_level: str = "WARNING"


@dataclass(frozen=True)
class KindCount:
    """Redis keys of one kind: how many, how many without a TTL, the longest TTL left."""

    keys: int = 0
    without_ttl: int = 0
    longest_ttl: int = 0


@dataclass
class Sample:
    """The bot's memory and the Redis keys after some conversations."""

    label: str
    conversations: int
    messages: int
    rss_kib: int
    kinds: dict[str, KindCount]

    @property
    def keys(self) -> int:
        """All keys."""
        return sum(k.keys for k in self.kinds.values())

    @property
    def without_ttl(self) -> int:
        """Keys that never expire."""
        return sum(k.without_ttl for k in self.kinds.values())


@dataclass
class SoakReport:
    """Everything one soak measured."""

    options: Options
    samples: list[Sample] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    logs: Path | None = None

    @property
    def final(self) -> Sample:
        """The last sample (after every conversation)."""
        return self.samples[-1]

    def total(self, name: str) -> int:
        """A count summed over the measured runs (``messages``, ``answered``, ...)."""
        return sum(int(getattr(r, name)) for r in self.runs)


def kind_of(name: str) -> str:
    """``wispbot:lock:telegram:1:queue`` -> ``lock:queue``; ``wispbot:conv:...`` -> ``conv``."""
    parts = name.split(":")
    kind = parts[1] if len(parts) > 1 else name
    return f"{kind}:queue" if name.endswith(":queue") else kind


async def census(redis_url: str) -> dict[str, KindCount]:
    """Every key of the database by kind, with the TTLs (SCAN, then TTL in pipelines)."""
    redis = Redis.from_url(redis_url)
    found: dict[str, KindCount] = {}
    try:
        batch: list[str] = []

        async def count(names: list[str]) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.ttl(name)
                ttls = await pipe.execute()
            for name, ttl in zip(names, ttls, strict=True):
                if ttl == -2:  # expired between SCAN and TTL
                    continue
                old = found.get(kind_of(name), KindCount())
                found[kind_of(name)] = KindCount(
                    old.keys + 1, old.without_ttl + (ttl == -1), max(old.longest_ttl, ttl)
                )

        async for raw in redis.scan_iter(count=1000):
            batch.append(raw.decode())
            if len(batch) >= 1000:
                await count(batch)
                batch = []
        if batch:
            await count(batch)
    finally:
        await redis.aclose()
    return dict(sorted(found.items()))


async def soak(opts: Options) -> SoakReport:
    """Warm up, then the conversations in quarters, sampling after each."""
    workdir = scratch_dir()
    report = SoakReport(opts, logs=workdir)
    n = opts.conversations
    sandbox = Sandbox(sandbox_data(WARMUP + n))
    async with running_peers(sandbox) as (fake, inflight):
        spec = wispbot_spec(redis_db=opts.redis_db)
        # Handoffs open forum topics in the agents' group of the fake.
        env = {**spec.env, "TELEGRAM_AGENTS_CHAT_ID": str(fake.agents_chat_id)}
        spec = dataclasses.replace(spec, env=env)

        async def body(bot: BotProcess) -> None:
            async def sample(label: str, done: int) -> None:
                kinds = await census(bot.redis_url)
                messages = done * len(SOAK)
                report.samples.append(Sample(label, done, messages, bot.rss_kib(), kinds))

            warm = customers(WARMUP, offset=n)
            await run_load(bot, sandbox, inflight, "warm-up", split(warm, WARMUP), SOAK)
            await sample("warm-up", 0)
            everyone = customers(n)
            parts = max(1, min(SAMPLES, n))
            done = 0
            for i in range(parts):
                chunk = everyone[i * n // parts : (i + 1) * n // parts]
                label = f"{(i + 1) * 100 // parts}%"
                run = await run_load(
                    bot, sandbox, inflight, label, split(chunk, opts.workers), SOAK, deadline=600
                )
                report.runs.append(run)
                done += len(chunk)
                await sample(label, done)

        await with_bot(spec, fake, sandbox, workdir, body, log_level=opts.log_level)
    return report


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _ttl(seconds: int) -> str:
    if seconds <= 0:
        return "-"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds} s"


def render(report: SoakReport) -> str:
    """The report as text tables."""
    opts = report.options
    steps = " -> ".join(s.value.replace("{", "").replace("}", "") for s in SOAK)
    lines = [
        f"wispbot soak, {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs",
        f"conversation ({len(SOAK)} messages): {steps}",
        f"load: {opts.conversations} conversations, each a different customer, "
        f"{opts.workers} at a time, closed loop; {opts.conversations * len(SOAK)} messages; "
        "webhook mode, local fake Bot API and WispHub sandbox, Redis",
        "",
        "after      conversations  messages   bot RSS  Redis keys  without TTL",
    ]
    for s in report.samples:
        lines.append(
            f"{s.label:<10} {s.conversations:>13} {s.messages:>9} {_mib(s.rss_kib):>9} "
            f"{s.keys:>11} {s.without_ttl:>12}"
        )
    final = report.final
    lines += [
        "",
        "Redis keys at the end, by kind:",
        "  kind           keys  without TTL  longest TTL",
    ]
    for kind, count in final.kinds.items():
        lines.append(
            f"  {kind:<12} {count.keys:>6} {count.without_ttl:>12} {_ttl(count.longest_ttl):>12}"
        )
    messages, answered = report.total("messages"), report.total("answered")
    elapsed = sum(r.elapsed for r in report.runs)
    lines += [
        "",
        f"messages {messages}, answered {answered}, unanswered {report.total('unanswered')}, "
        f"wrong answers {report.total('unexpected')}, conversations completed "
        f"{report.total('completed')}/{report.total('conversations')}, "
        f"{answered / elapsed if elapsed else 0:.0f} messages/s",
    ]
    first = report.samples[0]
    growth = final.rss_kib - first.rss_kib
    per = growth / final.conversations if final.conversations else 0.0
    lines += [
        f"bot RSS from the warm-up to the end: {_mib(first.rss_kib)} -> {_mib(final.rss_kib)} "
        f"({growth / 1024:+.1f} MiB, {per:.2f} KiB a conversation)",
        f"every key has a TTL: {final.without_ttl} without -> "
        f"{'met' if final.without_ttl == 0 else 'NOT met'}",
    ]
    errors = [e for r in report.runs for e in r.errors]
    if errors:
        lines += ["", f"problems ({len(errors)}, first 10):", *(f"  {e}" for e in errors[:10])]
    lines += ["", f"bot log: {report.logs}"]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    ap.add_argument("--conversations", type=int, default=2000, help="customers (2000)")
    ap.add_argument("--workers", type=int, default=100, help="conversations at once (100)")
    ap.add_argument("--redis-db", type=int, default=6, help="Redis database, flushed (6)")
    ap.add_argument("--log-level", default="WARNING", help="the bot's LOG_LEVEL (WARNING)")
    args = ap.parse_args(argv)
    return Options(
        conversations=args.conversations,
        workers=args.workers,
        redis_db=args.redis_db,
        log_level=args.log_level.upper(),
    )


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit 1 when the bot could not be run or a key has no TTL."""
    opts = parse(argv)
    try:
        report = asyncio.run(soak(opts))
    except RuntimeError as err:
        print(f"soak failed: {err}", file=sys.stderr)
        return 1
    print(render(report))
    return 0 if report.final.without_ttl == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
