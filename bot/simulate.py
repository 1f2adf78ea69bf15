"""Scenario files (design.md section 6): a conversation as YAML, run against the real engine.

Each scenario runs with in-memory sessions, in-memory agents' topics, a simulated clock, and the
WispHub sandbox served over real HTTP on loopback (the scenario's ``wisphub:`` fixture replaces the
demo data of the kinds it gives). ``python -m bot simulate PATH...`` prints each transcript and
exits non-zero when any step fails.

Steps: ``user`` (text), ``press`` (the option of the newest bot message whose label matches),
``agent`` (an agent writes in the conversation's topic), ``wait`` (seconds of simulated time; due
handoff timeouts fire), ``expect`` / ``expect_not`` (regex over the replies since the last move,
case- and accent-insensitive, text and option labels), ``expect_wisphub`` (a request made since
the last move; with ``count`` exactly that many, ``count: 0`` proving none). Extensions:
``media`` (the customer sends a photo, sticker, ...), ``photo`` (a photo with that caption,
``""`` for none), ``document`` (a file, e.g. a PDF receipt, with that caption), ``expect_agents`` (regex over what the
agents' topic received since the last move), ``fault`` (inject a WispHub fault from now on;
``after: true`` carries the request out and only replaces its answer, as a proxy's 502 after
WispHub made the ticket);
top-level ``now`` (ISO start time) and ``settings`` (environment names → values, e.g.
``BUSINESS_HOURS``), ``agents: false`` (no agents' chat configured). Notices (issue 15):
``expect_subscribed`` / ``expect_not_subscribed`` (regex over the conversation's subscriptions,
one ``topic:target`` a line, plus ``opted_out``); top-level ``notices: false`` (no
subscriptions configured, as with ``NOTIFY_ENABLED=false``).
"""

from __future__ import annotations

import itertools
import re
import sys
import traceback
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bot.channels.base import AgentMessage
from bot.handoff import LocalAgents, NoAgents
from bot.runtime import open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore
from flows.ports import HandoffPort
from flows.types import CHANNELS, Channel, ConvKey, Inbound, Kind, Media, Outbound
from integrations.wisphub.sandbox import RecordedRequest, Sandbox

DEFAULT_START = "2026-11-25T10:00:00-05:00"  # a Wednesday morning in Bogotá
_PREFIXES = {"WISPHUB_": "wisphub", "TELEGRAM_": "telegram", "WHATSAPP_": "whatsapp"}
STEP_KINDS = frozenset(
    {
        "user",
        "press",
        "agent",
        "wait",
        "expect",
        "expect_not",
        "expect_wisphub",
        "media",
        "photo",
        "document",
        "expect_agents",
        "fault",
        "expect_subscribed",
        "expect_not_subscribed",
    }
)


class ScenarioError(Exception):
    """A scenario file that cannot be run as written."""


class StepFailed(AssertionError):
    """An expectation did not hold."""


class SimClock:
    """Simulated time: starts at the scenario's ``now`` and moves only with ``wait``."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class ScenarioSubscriptions:
    """The notice subscriptions a scenario's conversation made, kept in memory to be checked
    (the scheduler that reads them is not part of a scenario)."""

    def __init__(self) -> None:
        self.subs: dict[tuple[str, str, ConvKey], tuple[int, float]] = {}
        self.muted: set[ConvKey] = set()

    async def subscribe(
        self, topic: str, target: str, key: ConvKey, *, service_id: int, until: float
    ) -> None:
        self.subs[(topic, target, key)] = (service_id, until)

    async def unsubscribe(self, topic: str, target: str, key: ConvKey) -> None:
        self.subs.pop((topic, target, key), None)

    async def opt_out(self, key: ConvKey) -> None:
        self.muted.add(key)

    async def opt_in(self, key: ConvKey) -> None:
        self.muted.discard(key)

    async def opted_out(self, key: ConvKey) -> bool:
        return key in self.muted

    def describe(self, key: ConvKey) -> str:
        """One ``topic:target`` a line, and ``opted_out`` when so."""
        lines = [f"{topic}:{target}" for topic, target, k in self.subs if k == key]
        return "\n".join([*lines, *(["opted_out"] if key in self.muted else [])])


@dataclass
class ScenarioResult:
    """The outcome of one scenario file."""

    path: str
    name: str
    ok: bool
    transcript: list[str] = field(default_factory=list)
    error: str | None = None


def _settings_overrides(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {
        "bot": {},
        "wisphub": {},
        "telegram": {},
        "whatsapp": {},
    }
    for name, value in (scenario.get("settings") or {}).items():
        upper = str(name).upper()
        concern = next((c for p, c in _PREFIXES.items() if upper.startswith(p)), "bot")
        field_name = upper.removeprefix(next((p for p in _PREFIXES if upper.startswith(p)), ""))
        overrides[concern][field_name.lower()] = value
    if "language" in scenario:
        overrides["bot"]["bot_language"] = scenario["language"]
    # Keep scenarios fast: no waiting between WispHub retries or long ping deadlines.
    overrides["wisphub"].setdefault("ping_deadline", 5.0)
    return overrides


def _loose(text: str) -> str:
    """Case and accents folded, punctuation kept (patterns are regular expressions)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _matches(pattern: str, text: str) -> bool:
    return re.search(_loose(pattern), _loose(text)) is not None


def _window_text(replies: list[Outbound]) -> str:
    parts: list[str] = []
    for reply in replies:
        parts.append(reply.text)
        parts.extend(o.label for o in reply.options)
    return "\n".join(parts)


def _request_matches(req: RecordedRequest, spec: dict[str, Any]) -> bool:
    if "method" in spec and req.method.upper() != str(spec["method"]).upper():
        return False
    if "path" in spec and not re.fullmatch(str(spec["path"]), req.path):
        return False
    for key, value in (spec.get("fields") or {}).items():
        if str(req.fields.get(key)) != str(value):
            return False
    query = spec.get("query") or {}
    return all(str(req.query.get(k)) == str(v) for k, v in query.items())


class Runner:
    """Plays one scenario's steps against a runtime."""

    def __init__(self, scenario: dict[str, Any], path: str) -> None:
        self.scenario = scenario
        self.path = path
        self.transcript: list[str] = []
        channel = scenario.get("channel", "telegram")
        if channel not in CHANNELS:
            raise ScenarioError(f"channel must be one of {', '.join(CHANNELS)}")
        self.channel: Channel = channel
        phone = str(scenario.get("phone", "") or "")
        chat = re.sub(r"\D", "", phone) if channel == "whatsapp" and phone else "1001"
        self.key = ConvKey(channel, chat)
        self.phone = phone or None
        self.events = itertools.count(1)
        self.window: list[Outbound] = []
        self.agents_seen = 0
        self.requests_seen = 0
        self.last_move = "(start)"
        self.last_options: Outbound | None = None
        self.subscriptions = ScenarioSubscriptions() if scenario.get("notices", True) else None

    def log(self, line: str) -> None:
        self.transcript.append(line)

    def show(self, replies: list[Outbound]) -> None:
        self.window.extend(replies)
        for reply in replies:
            lines = reply.text.splitlines() or [""]
            self.log(f"bot> {lines[0]}")
            self.transcript.extend(f"     {line}" for line in lines[1:])
            for n, option in enumerate(reply.options, 1):
                self.log(f"     [{n}] {option.label}")
            if reply.options:
                self.last_options = reply

    async def run(self) -> None:
        scenario = self.scenario
        start = datetime.fromisoformat(str(scenario.get("now", DEFAULT_START))).timestamp()
        clock = SimClock(start)
        settings = load_settings(**_settings_overrides(scenario))
        sandbox = Sandbox.from_fixture(scenario.get("wisphub") or {})
        agents = LocalAgents() if scenario.get("agents", True) else None
        handoff: HandoffPort = agents if agents is not None else NoAgents()
        store = MemoryStore(clock=clock)
        async with open_runtime(
            settings,
            handoff,
            sandbox=sandbox,
            store=store,
            clock=clock,
            subscriptions=self.subscriptions,
        ) as rt:
            for number, step in enumerate(scenario.get("steps") or [], 1):
                if not isinstance(step, dict) or len(step) != 1:
                    raise ScenarioError(f"step {number}: one key per step, e.g. '- user: hola'")
                ((kind, value),) = step.items()
                if kind not in STEP_KINDS:
                    raise ScenarioError(f"step {number}: unknown step {kind!r}")
                try:
                    await self.step(rt, sandbox, agents, clock, kind, value)
                except StepFailed as err:
                    raise StepFailed(f"step {number} ({kind}: {value!r}): {err}") from None

    def _new_window(self, move: str) -> None:
        self.window = []
        self.last_move = move

    async def _send(self, rt: Any, inbound: Inbound, agents: LocalAgents | None) -> None:
        topic = agents.topic_of(self.key) if agents else None
        before = len(topic.posts) if topic else 0
        self.agents_seen = before
        self.show(await rt.engine.handle(inbound))
        self._log_topic(agents, before)

    def _log_topic(self, agents: LocalAgents | None, before: int) -> None:
        topic = agents.topic_of(self.key) if agents else None
        if topic is not None:
            for post in topic.posts[before:]:
                self.log(f"     (agents' topic) {post}")

    async def step(
        self,
        rt: Any,
        sandbox: Sandbox,
        agents: LocalAgents | None,
        clock: SimClock,
        kind: str,
        value: Any,
    ) -> None:
        event = f"e{next(self.events)}"
        if kind in ("user", "press", "media", "photo", "document", "agent", "wait"):
            self.requests_seen = len(sandbox.requests)
        if kind == "user":
            text = str(value)
            self._new_window(f"user: {text}")
            self.log(f"you> {text}")
            await self._send(
                rt, Inbound(self.key, event, Kind.TEXT, text=text, phone=self.phone), agents
            )
        elif kind == "press":
            option = self._find_option(str(value))
            self._new_window(f"press: {option.label}")
            self.log(f"you> [{option.label}]")
            inbound = Inbound(self.key, event, Kind.BUTTON, payload=option.id, phone=self.phone)
            await self._send(rt, inbound, agents)
        elif kind in ("media", "photo", "document"):
            self._new_window(f"{kind}: {value}")
            self.log(f"you> <{value}>" if kind == "media" else f"you> <{kind}> {value or ''}")
            kind_of = str(value) if kind == "media" else kind
            media = Media(kind_of, event, caption="" if kind == "media" else str(value or ""))
            await self._send(
                rt, Inbound(self.key, event, Kind.MEDIA, media=media, phone=self.phone), agents
            )
        elif kind == "agent":
            topic = agents.topic_of(self.key) if agents else None
            if topic is None:
                raise StepFailed("no agents' topic exists for this conversation")
            # ``agent: text``, or ``agent: {name: Ana, text: ...}`` for an agent with a first name
            said = value if isinstance(value, dict) else {"text": value}
            text, name = str(said.get("text", "")), str(said.get("name", ""))
            self._new_window(f"agent: {text}")
            self.log(f"agent> {text}")
            before = len(topic.posts)
            self.agents_seen = before
            message = AgentMessage(
                topic.thread_id, next(self.events), text, name or "Agente", first_name=name
            )
            self.show(await rt.engine.from_agent(message))
            self._log_topic(agents, before)
        elif kind == "wait":
            clock.now += float(value)
            self._new_window(f"wait: {value}")
            self.log(f"(… {value} s later)")
            self.show(await rt.engine.sweep())
        elif kind == "expect":
            if not _matches(str(value), _window_text(self.window)):
                raise StepFailed(f"expected /{value}/ in the replies to {self.last_move!r}")
        elif kind == "expect_not":
            if _matches(str(value), _window_text(self.window)):
                raise StepFailed(f"did not expect /{value}/ in the replies to {self.last_move!r}")
        elif kind == "expect_agents":
            topic = agents.topic_of(self.key) if agents else None
            posts = "\n".join(topic.posts[self.agents_seen :]) if topic else ""
            if not _matches(str(value), posts):
                raise StepFailed(
                    f"expected /{value}/ in the agents' topic after {self.last_move!r}"
                )
        elif kind in ("expect_subscribed", "expect_not_subscribed"):
            subs = self.subscriptions.describe(self.key) if self.subscriptions else ""
            if _matches(str(value), subs) != (kind == "expect_subscribed"):
                raise StepFailed(
                    f"{kind} /{value}/ after {self.last_move!r}; subscriptions: {subs!r}"
                )
        elif kind == "expect_wisphub":
            if not isinstance(value, dict):
                raise ScenarioError("expect_wisphub takes {method, path, fields, query}")
            made = sandbox.requests[self.requests_seen :]
            if "count" in value:
                found = sum(1 for r in made if _request_matches(r, value))
                if found != int(value["count"]):
                    raise StepFailed(
                        f"expected {value['count']} WispHub requests like {value}, got {found}"
                    )
            elif not any(_request_matches(r, value) for r in made):
                seen = ", ".join(f"{r.method} {r.path}" for r in made) or "none"
                raise StepFailed(f"no WispHub request like {value} (made: {seen})")
        elif kind == "fault":
            spec = dict(value)
            sandbox.add_fault(
                str(spec.pop("path")),
                status=int(spec.pop("status", 500)),
                delay=float(spec.pop("delay", 0.0)),
                count=spec.pop("count", 1),
                method=spec.pop("method", None),
                after=bool(spec.pop("after", False)),
            )
            self.log(f"(WispHub fault injected: {value})")

    def _find_option(self, pattern: str) -> Any:
        if self.last_options is None:
            raise StepFailed("no bot message has offered options yet")
        for option in self.last_options.options:
            if _matches(f"^(?:{pattern})$", option.label) or _matches(pattern, option.label):
                return option
        labels = ", ".join(o.label for o in self.last_options.options)
        raise StepFailed(f"no option matching /{pattern}/ (offered: {labels})")


async def run_scenario(path: str | Path) -> ScenarioResult:
    """Run one scenario file; never raises for a failing step (the result says so)."""
    path = Path(path)
    try:
        scenario = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        return ScenarioResult(str(path), path.stem, False, error=f"cannot read: {err}")
    name = str(scenario.get("name", path.stem))
    runner: Runner | None = None
    try:
        runner = Runner(scenario, str(path))
        await runner.run()
    except (StepFailed, ScenarioError) as err:
        return ScenarioResult(str(path), name, False, runner.transcript if runner else [], str(err))
    except Exception as err:  # a crash is a failed scenario with its traceback, not a dead runner
        detail = "".join(traceback.format_exception_only(err)).strip()
        return ScenarioResult(str(path), name, False, runner.transcript if runner else [], detail)
    return ScenarioResult(str(path), name, True, runner.transcript)


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders become their ``*.yaml``/``*.yml`` files, sorted."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            found.append(p)
    return found


async def run_paths(paths: list[str], *, quiet: bool = False) -> int:
    """The ``simulate`` command: run, print transcripts, return the exit code."""
    files = expand(paths)
    if not files:
        print("wispbot: no scenario files found", file=sys.stderr)
        return 2
    failed = 0
    for file in files:
        result = await run_scenario(file)
        mark = "PASS" if result.ok else "FAIL"
        if not result.ok:
            failed += 1
        if not quiet or not result.ok:
            print(f"=== {mark} {result.name} ({result.path})")
            print("\n".join(result.transcript))
            if result.error:
                print(f"!!! {result.error}")
            print()
        else:
            print(f"=== {mark} {result.name}")
    print(f"scenarios: {len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0
