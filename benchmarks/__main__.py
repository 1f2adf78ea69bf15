"""``python -m benchmarks``: wispbot against the idiomatic aiogram peer, then the mass outage.

Both bots run the identify-and-verify conversation (/start → Soy cliente → document → name) as
subprocesses in webhook mode against in-process fake Bot APIs and WispHub sandboxes, with the
same customers, in the same run, taking each run's halves in turn (``compare``); then both run
the free-text conversation (hola → soy cliente → document → name → cuanto debo? → gracias,
``benchmarks/free_text.py``). The
mass-outage run (wispbot only) has every customer of one zone write within a window while
WispHub takes 300 ms per call.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiogram

from benchmarks import free_text
from benchmarks.data import Customer, customers, sandbox_data
from benchmarks.driver import (
    IDENTIFY,
    OUTAGE,
    BotProcess,
    BotSpec,
    InFlight,
    RunResult,
    Step,
    met,
    peer_spec,
    run_load,
    running_peers,
    scratch_dir,
    split,
    wispbot_spec,
    with_bot,
)
from benchmarks.storm import StormResult, storm_lines, storm_run
from bot.cli import run_fast
from integrations.wisphub.sandbox import Sandbox

WARMUP = 10  # conversations before measuring (connections, imports, first-call caches)
SEGMENTS = 2  # each run cut in two, the bots taking the halves in turn: A B, B A
OUTAGE_DELAY = 0.3  # seconds WispHub takes per call in the outage run


@dataclass
class Options:
    """What to run."""

    customers: int = 50
    rounds: int = 8  # conversations per customer (each on a fresh chat)
    outage_customers: int = 2000
    outage_window: float = 60.0
    peer: bool = True
    outage: bool = True
    log_level: str = "WARNING"
    profile: Path | None = None
    # Redis databases the bots use (flushed at each start); the smoke test picks others so a
    # test run never wipes a benchmark that is running.
    wispbot_db: int = 11
    peer_db: int = 10
    # The control: the same peer on uvloop, wispbot's event loop (its lead is not the loop's).
    peer_uvloop: bool = True
    peer_uvloop_db: int = 12
    # The free-text conversation (issue 13), after the two identify runs.
    free_text: bool = True
    # The Telegram-limit storm (issue 14): customers writing at once, 30 messages/s enforced.
    storm_customers: int = 600


@dataclass
class BotResults:
    """One bot's runs."""

    spec: BotSpec
    distinct: RunResult
    same: RunResult
    free: RunResult | None = None
    free_steps: list[Step] = field(default_factory=list)


@dataclass
class Report:
    """Everything measured in one ``python -m benchmarks``."""

    options: Options
    bots: list[BotResults] = field(default_factory=list)
    outage: RunResult | None = None
    storm: StormResult | None = None
    logs: Path | None = None


@dataclass
class Lane:
    """One bot under comparison, with its own fake Bot API and sandbox (served, started)."""

    spec: BotSpec
    bot: BotProcess
    sandbox: Sandbox
    inflight: InFlight
    parts: dict[str, list[RunResult]] = field(default_factory=dict)
    free_steps: list[Step] = field(default_factory=list)

    async def run(
        self, label: str, chunk: Sequence[Customer], workers: int, steps: Sequence[Step]
    ) -> None:
        result = await run_load(
            self.bot, self.sandbox, self.inflight, label, split(chunk, workers), steps
        )
        self.parts.setdefault(label, []).append(result)

    def results(self) -> BotResults:
        free = self.parts.get("free text")
        return BotResults(
            self.spec,
            RunResult.combined(self.parts["distinct customers"]),
            RunResult.combined(self.parts["same customer"]),
            RunResult.combined(free) if free else None,
            self.free_steps,
        )


def _segments(items: Sequence[Customer], count: int) -> list[Sequence[Customer]]:
    """``items`` cut into ``count`` consecutive parts of (nearly) equal size."""
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]


async def compare(specs: Sequence[BotSpec], opts: Options, workdir: Path) -> list[BotResults]:
    """All bots started side by side (an idle bot costs nothing), warmed up, then each run cut
    into segments taken in turn, the order reversed every other segment (A B C, then C B A): the
    machine's speed drifts over minutes, and a bot measured only in its own minutes was once
    2.5x and once 4.3x the other on the same code. Each bot's segments are summed."""
    n = opts.customers * opts.rounds
    segments = max(1, min(SEGMENTS, opts.rounds))
    # Generated clients: distinct, warm-up, (the same run's chats), free text, its learning.
    plans: list[tuple[str, list[Customer], Sequence[Step] | None]] = [
        ("distinct customers", customers(n), IDENTIFY),
        ("same customer", customers(n, same=True, offset=n + WARMUP), IDENTIFY),
    ]
    if opts.free_text:
        plans.append(("free text", customers(n, offset=2 * n + WARMUP), None))
    async with contextlib.AsyncExitStack() as stack:
        lanes: list[Lane] = []
        for spec in specs:
            sandbox = Sandbox(sandbox_data(3 * n + WARMUP + 1))
            fake, inflight = await stack.enter_async_context(running_peers(sandbox))
            profile = opts.profile if spec.label == "wispbot" else None
            bot = BotProcess(
                spec, fake, sandbox, workdir, log_level=opts.log_level, profile=profile
            )
            stack.push_async_callback(bot.stop)
            await bot.start()
            lanes.append(Lane(spec, bot, sandbox, inflight))
        for lane in lanes:
            warm = customers(WARMUP, offset=n)
            await run_load(
                lane.bot, lane.sandbox, lane.inflight, "warm-up", split(warm, WARMUP), IDENTIFY
            )
            if opts.free_text:
                [learner] = customers(1, offset=3 * n + WARMUP)
                lane.free_steps = await free_text.learn_replies(
                    lane.bot, learner, free_text.FREE_TEXT
                )
        for label, people, steps in plans:
            for index, chunk in enumerate(_segments(people, segments)):
                for lane in lanes if index % 2 == 0 else reversed(lanes):
                    await lane.run(label, chunk, opts.customers, steps or lane.free_steps)
        return [lane.results() for lane in lanes]


async def outage_run(opts: Options, workdir: Path) -> RunResult:
    """Every customer of one zone writes within the window; WispHub answers in 300 ms."""
    n = opts.outage_customers
    sandbox = Sandbox(sandbox_data(n, outage=True))
    sandbox.add_fault("^/", status=0, delay=OUTAGE_DELAY, count=None)
    async with running_peers(sandbox) as (fake, inflight):

        async def body(bot: BotProcess) -> RunResult:
            plan = [[c] for c in customers(n)]
            return await run_load(
                bot,
                sandbox,
                inflight,
                "mass outage",
                plan,
                OUTAGE,
                window=opts.outage_window,
                deadline=opts.outage_window + 120,
            )

        return await with_bot(
            wispbot_spec(redis_db=opts.wispbot_db),
            fake,
            sandbox,
            workdir,
            body,
            log_level=opts.log_level,
        )


async def bench(opts: Options) -> Report:
    """Run everything asked for; the bots' logs stay in a scratch directory."""
    workdir = scratch_dir()
    report = Report(opts, logs=workdir)
    specs = [wispbot_spec(redis_db=opts.wispbot_db)]
    if opts.peer:
        specs.append(peer_spec(redis_db=opts.peer_db))
        if opts.peer_uvloop:
            specs.append(peer_spec(redis_db=opts.peer_uvloop_db, uvloop=True))
    report.bots = await compare(specs, opts, workdir)
    if opts.outage and opts.outage_customers > 0:
        report.outage = await outage_run(opts, workdir)
    if opts.storm_customers > 0:
        report.storm = await storm_run(
            opts.storm_customers,
            redis_db=opts.wispbot_db,
            workdir=workdir,
            log_level=opts.log_level,
        )
    return report


# ---- printing --------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def render(report: Report) -> str:
    """The report as text tables."""
    opts = report.options
    lines = [
        f"wispbot benchmark, {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.system()}",
        "conversation: /start -> Soy cliente -> document -> name (WispHub look-up by document)",
        f"load: {opts.customers} concurrent customers x {opts.rounds} conversations each, closed "
        "loop, webhook mode, local fake Bot API and WispHub sandbox, Redis",
        f"log level: {opts.log_level} for both bots",
    ]
    for b in report.bots:
        name = (
            f"aiogram {aiogram.__version__} Dispatcher+Router+FSM, RedisStorage, "
            "SimpleRequestHandler, httpx"
            if b.spec.label.startswith("peer")
            else "python -m bot run"
        )
        lines.append(f"{b.spec.label}: {name}; Telegram pacing: {b.spec.pacing}")
    rows: list[tuple[str, list[str], str]] = []
    bots = report.bots
    w = bots[0]
    p = bots[1] if len(bots) > 1 else None

    def row(title: str, get: object, fmt: object, ratio: object = None) -> None:
        values = [fmt(get(b)) for b in bots]  # type: ignore[operator]
        r = ratio(get(w), get(p)) if (ratio and p) else ""  # type: ignore[operator]
        rows.append((title, values, r))

    row("messages/s", lambda b: b.distinct.rate, lambda v: f"{v:.0f}", _ratio)
    row("reply latency p50", lambda b: b.distinct.percentile(50), _ms, _ratio)
    row("reply latency p99", lambda b: b.distinct.percentile(99), _ms, _ratio)
    row("messages sent", lambda b: b.distinct.messages, str)
    row("Bot API sends/message", lambda b: b.distinct.sends_per_message, "{:.2f}".format)
    row("unanswered (10 s)", lambda b: b.distinct.unanswered, str)
    row("wrong answers", lambda b: b.distinct.unexpected, str)
    row(
        "conversations completed",
        lambda b: f"{b.distinct.completed}/{b.distinct.conversations}",
        str,
    )
    row("WispHub calls/conversation", lambda b: b.distinct.calls_per_conversation, "{:.2f}".format)
    row("bot CPU ms/message", lambda b: _cpu_per_msg(b.distinct), "{:.2f}".format, _ratio)
    row("same customer: messages/s", lambda b: b.same.rate, lambda v: f"{v:.0f}", _ratio)
    row("same customer: p99", lambda b: b.same.percentile(99), _ms, _ratio)
    row("same customer: unanswered", lambda b: b.same.unanswered, str)
    row(
        "same customer: WispHub calls/conv",
        lambda b: b.same.calls_per_conversation,
        "{:.2f}".format,
    )
    header = ("", [b.spec.label for b in bots], "wispbot/peer" if p else "")
    table = [header, *rows]
    widths = [max(len(r[0]) for r in table)] + [
        max(len(r[1][i]) for r in table) for i in range(len(bots))
    ]
    lines.append("")
    lines.append("distinct customers (every conversation a different WispHub client):")
    for title, values, ratio in table:
        cells = [title.ljust(widths[0])] + [v.rjust(widths[i + 1]) for i, v in enumerate(values)]
        lines.append("  " + "  ".join(cells) + (f"  {ratio:>12}" if ratio or p else ""))
    if p is not None:
        wd, pd = w.distinct, p.distinct
        lines.append("")
        lines.append("targets (issue 6):")
        lines.append(
            f"  messages/s >= 2x peer: {_ratio(wd.rate, pd.rate)} -> {met(wd.rate >= 2 * pd.rate)}"
        )
        lines.append(
            f"  p99 <= half the peer's: {_ratio(wd.percentile(99), pd.percentile(99))} -> "
            f"{met(wd.percentile(99) <= pd.percentile(99) / 2)}"
        )
        lines.append(f"  0 unanswered: {wd.unanswered} -> {met(wd.unanswered == 0)}")
        lines.append(
            f"  <= 1 WispHub call per identified conversation: "
            f"{wd.calls_per_conversation:.2f} -> {met(wd.calls_per_conversation <= 1)}"
        )
        if len(bots) > 2:
            ud = bots[2].distinct
            lines.append(
                f"control, the peer on uvloop: wispbot/peer+uvloop messages/s "
                f"{_ratio(wd.rate, ud.rate)}, p99 {_ratio(wd.percentile(99), ud.percentile(99))}, "
                f"CPU per message {_ratio(_cpu_per_msg(wd), _cpu_per_msg(ud))}"
            )
    lines += [
        "",
        f"Bot API sends per customer message (issue 14, target <= 1.1): "
        f"{w.distinct.sends_per_message:.2f} -> {met(w.distinct.sends_per_message <= 1.1)}",
    ]
    if report.storm is not None:
        lines += ["", *storm_lines(report.storm)]
    if report.outage is not None:
        o = report.outage
        lines += [
            "",
            f"mass outage (wispbot): {opts.outage_customers} customers of one zone (router "
            f"falla_general) starting within {opts.outage_window:g} s, WispHub "
            f"{OUTAGE_DELAY * 1000:.0f} ms per call, WISPHUB_MAX_CONCURRENCY default",
            "  conversation: /start -> Soy cliente -> document -> name -> Reportar falla "
            "(outage announced)",
            f"  messages {o.messages}, answered {o.answered}, unanswered {o.unanswered}, "
            f"wrong answers {o.unexpected}, conversations completed {o.completed}/"
            f"{o.conversations}",
            f"  reply latency p50 {_ms(o.percentile(50))}, p99 {_ms(o.percentile(99))}, "
            f"max {_ms(max(o.latencies) if o.latencies else float('nan'))}",
            f"  messages/s {o.rate:.0f}; bot CPU ms/message {_cpu_per_msg(o):.2f}",
            f"  WispHub calls {o.wisphub_calls} ({o.calls_per_conversation:.2f}/conversation), "
            f"most in flight at once {o.wisphub_peak}",
            f"  targets: everyone answered -> {met(o.unanswered == 0 and o.completed == o.conversations)}; "
            f"p99 < 2 s -> {met(o.percentile(99) < 2)}",
        ]
    lines += free_text.render([(b.spec.label, b.free, b.free_steps) for b in bots[:2]])
    errors = [
        e
        for b in bots
        for e in (*b.distinct.errors, *b.same.errors, *(b.free.errors if b.free else ()))
    ]
    if report.outage is not None:
        errors += report.outage.errors
    if report.storm is not None:
        errors += report.storm.run.errors
    if errors:
        lines += ["", f"problems ({len(errors)}, first 10):", *(f"  {e}" for e in errors[:10])]
    lines += ["", f"bot logs: {report.logs}"]
    return "\n".join(lines)


def _cpu_per_msg(r: RunResult) -> float:
    return r.cpu_seconds * 1000 / r.answered if r.answered else float("nan")


def parse(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--customers", type=int, default=50, help="concurrent customers (50)")
    ap.add_argument("--rounds", type=int, default=8, help="conversations per customer (8)")
    ap.add_argument("--outage-customers", type=int, default=2000, help="0 skips the run (2000)")
    ap.add_argument("--outage-window", type=float, default=60.0, help="seconds (60)")
    ap.add_argument(
        "--storm-customers", type=int, default=600, help="Telegram-limit storm, 0 skips (600)"
    )
    ap.add_argument("--quick", action="store_true", help="small loads: a minute in all")
    ap.add_argument("--no-peer", action="store_true", help="wispbot only")
    ap.add_argument(
        "--no-uvloop-peer", action="store_true", help="skip the control: the peer on uvloop"
    )
    ap.add_argument(
        "--no-free-text", action="store_true", help="skip the free-text conversation (issue 13)"
    )
    ap.add_argument("--log-level", default="WARNING", help="both bots' LOG_LEVEL (WARNING)")
    ap.add_argument("--profile", type=Path, help="write a cProfile of wispbot's process here")
    args = ap.parse_args(argv)
    opts = Options(
        customers=args.customers,
        rounds=args.rounds,
        outage_customers=args.outage_customers,
        outage_window=args.outage_window,
        storm_customers=args.storm_customers,
        peer=not args.no_peer,
        peer_uvloop=not args.no_uvloop_peer,
        free_text=not args.no_free_text,
        log_level=args.log_level.upper(),
        profile=args.profile.resolve() if args.profile else None,
    )
    if args.quick:
        opts.customers = min(opts.customers, 20)
        opts.rounds = min(opts.rounds, 3)
        opts.outage_customers = min(opts.outage_customers, 300)
        opts.outage_window = min(opts.outage_window, 10.0)
        opts.storm_customers = min(opts.storm_customers, 150)
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit 1 when a bot could not be run."""
    opts = parse(argv)
    try:
        # On uvloop, as wispbot: the load generator shares the cores with the bots, and what it
        # takes comes out of the faster bot's measure.
        report = run_fast(bench(opts))
    except RuntimeError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
