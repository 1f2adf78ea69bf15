"""Free text in the dialog: where a typed message that is not an offered option leads.

``flows.dialog`` asks :class:`FreeText` only after option matching failed (the classifier costs
more than a label look-up). The intent ids are design.md section 8's; what each leads to is issue
13's routing: a need a verified customer must have is kept in ``conv.data["want"]`` through the
identification and served when it succeeds (``wanted``, called by ``flows.identify``).
The choice among close intents is a rule of ours (``decide``): the classifier gives
probabilities, the dialog decides when a second guess is worth a question.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from flows.base import Conversation
from flows.client import CLIENT_OPTIONS
from flows.names import fold
from flows.texts import LANGUAGES, catalogue
from flows.types import Option
from flows.understand import Result, Understanding

if TYPE_CHECKING:  # the registry imports flows.identify, which imports this module
    from flows.registry import Flows

ASK = "intent:"  # option id prefix of the "¿Te refieres a A o a B?" buttons
SURE = 0.55  # from this confidence on the best intent is acted on, a close second or not
ASK_MIN = 0.15  # a guess below this is not offered back
# Below this the best guess is not acted on: in the team's evaluation files no right answer
# scored under it, while "Z̸a̵l̷g̶o̴" read as "saldo" (account) at 0.28.
ACT_MIN = 0.35
AGENT_IN_TEXT = 0.8  # how sure "I want an agent" must be to interrupt a free-text answer
AGENT_IN_TEXT_WORDS = 8  # longer answers (a fault description) are answers
MAX_MISSES = 2  # misunderstandings in a row before an agent is offered
NOT_UNDERSTOOD = "out_of_scope"

FAULTS = {
    "fault_no_internet": "no_internet",
    "fault_slow": "slow",
    "fault_intermittent": "intermittent",
    "fault_other": "other",
}
# Where each need leads (flow, trigger); a flow that needs verification goes through
# identification first.
TARGETS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(FAULTS, ("fault", "begin")),
    "account": ("client", "account"),
    "tickets": ("client", "tickets"),
    "payment_promise": ("promise", "begin"),
    "payment_report": ("payment_report", "begin"),
    "payment_methods": ("payment_methods", "begin"),
    "cancel_service": ("service_request", "begin"),
    "change_plan": ("service_request", "begin"),
    "move": ("service_request", "begin"),  # a change_plan that names a move ("me voy a mudar")
    "plans": ("plans", "begin"),
}
ASKABLE = (*TARGETS, "agent")  # needs a "¿Te refieres a A o a B?" may offer (free.intent.*)
REQUESTS = (
    "cancel_service",
    "change_plan",
    "move",
)  # conv.data["request"] for flow service_request
# Offered options that answer a pending yes/no question, in order of preference.
YES = ("fixed", "confirm", "ticket", "retry", "client")
NO = ("still", "cancel", "menu")

Run = Callable[..., Awaitable[bool]]
ToMenu = Callable[..., Awaitable[None]]


_WORD = re.compile(r"\w+")
_MOVE_WORDS = frozenset(fold(w) for lang in LANGUAGES for w in catalogue(lang)["move_words"])


def _moving(text: str) -> bool:
    """A plan-change message that is about moving house (the classifier has one intent for both)."""
    folded = fold(text)
    words = set(_WORD.findall(folded))
    return any(w in words if " " not in w else w in folded for w in _MOVE_WORDS)


def _family(intent: str) -> str:
    return "fault" if intent in FAULTS else intent


def prepare(conv: Conversation, intent: str) -> None:
    """Session data the target flow reads: the fault category, the kind of request."""
    if intent in FAULTS:
        conv.data["fault_category"] = FAULTS[intent]
    elif intent in REQUESTS:
        conv.data["request"] = intent


def wanted(conv: Conversation) -> tuple[str, str]:
    """Where a just-verified customer goes: the need they typed before, else the client menu."""
    intent = conv.data.pop("want", None)
    if intent not in TARGETS:
        return "client", "menu"
    prepare(conv, intent)
    return TARGETS[intent]


class FreeText:
    """The dialog's free-text routing over one loaded ``Understanding``."""

    def __init__(
        self,
        understanding: Understanding,
        flows: Flows,
        run: Run,
        to_menu: ToMenu,
        agent_words: Collection[str] = (),
    ) -> None:
        self.understanding = understanding
        self.flows = flows
        self._run = run
        self._to_menu = to_menu
        self._agent_words = frozenset(agent_words)

    def serves(self, intent: str) -> bool:
        """Whether a flow serves the intent (flows that are not built yet do not)."""
        target = TARGETS.get(intent)
        return target is None or target[0] in self.flows.flows

    def understand(self, conv: Conversation, text: str) -> Result:
        """The message's intent and entities, dates resolved in the ISP's time zone."""
        return self.understanding.understand(text, conv.session.lang, conv.ctx.local_now())

    def decide(self, result: Result) -> tuple[str | None, tuple[str, str] | None]:
        """The intent to act on, or two close needs to ask between, or neither."""
        intent = result.intent
        others = [i for i, p in result.alternatives if i != intent and p >= ASK_MIN]
        if "date" in result.entities and "payment_promise" in (intent, *others):
            return "payment_promise", None  # "quiero pagar mañana": a date says promise
        needs = [i for i in others if i in ASKABLE and self.serves(i)]
        if intent in ("greet", "thanks") and needs:
            return needs[0], None  # "hola, no tengo internet": the need, not the greeting
        if intent == NOT_UNDERSTOOD or result.confidence < ACT_MIN:
            return None, None
        close = needs and result.confidence < SURE and _family(needs[0]) != _family(intent)
        if close and intent in ASKABLE and self.serves(intent):
            return None, (intent, needs[0])
        return intent, None

    async def interrupts(self, conv: Conversation, text: str) -> bool:
        """A state waits for free text: only a clear request for an agent interrupts it."""
        if len(text.split()) > AGENT_IN_TEXT_WORDS:
            return False
        # Documents and names are most of these answers: the classifier only reads the ones
        # that name an agent ("mejor quiero hablar con un asesor").
        if self._agent_words.isdisjoint(_WORD.findall(fold(text))):
            return False
        result = self.understand(conv, text)
        if result.intent != "agent" or result.confidence < AGENT_IN_TEXT:
            return False
        conv.intents.append("agent")
        await self._run(conv, "agent", "begin", {})
        return True

    async def route(self, conv: Conversation, text: str, *, fresh: bool, misses: int) -> None:
        """A typed message at a choice: act on its need, ask between two, or say what we do."""
        result = self.understand(conv, text)
        intent, pair = self.decide(result)
        if pair is not None:
            conv.intents.append(NOT_UNDERSTOOD)
            labels = [conv.t(f"free.intent.{i}") for i in pair]
            conv.say(
                conv.t("free.did_you_mean", a=labels[0], b=labels[1]),
                [Option(ASK + i, label) for i, label in zip(pair, labels, strict=True)],
            )
        elif intent is None or intent == NOT_UNDERSTOOD:
            conv.intents.append(NOT_UNDERSTOOD)
            await self.miss(conv, fresh=fresh, misses=misses + 1)
        else:
            conv.intents.append(intent)
            if intent == "change_plan" and _moving(text):
                intent = "move"
            if fresh and intent in ("thanks", "goodbye", "affirm", "deny"):
                intent = "greet"  # nothing to thank or answer yet: the greeting and the menu
            elif fresh and intent not in ("greet", "document"):
                conv.say(conv.greeting())
            await self.act(conv, intent, result.entities)

    async def miss(self, conv: Conversation, *, fresh: bool, misses: int) -> None:
        """Not understood: what the bot can do with the menu; an agent after two in a row."""
        conv.data["misses"] = misses
        if fresh:
            await self._run(conv, "main", "begin", {})
            return
        options = [Option(i, label) for i, label in conv.data.get("opts", [])]
        if misses >= MAX_MISSES:
            options = [o for o in options if o.id != "agent"]
            options.insert(0, Option("agent", conv.t("opt.agent")))
            conv.say(conv.t("not_understood") + "\n" + conv.t("free.offer_agent"), options)
        elif options:
            conv.say(conv.t("not_understood"), options)
        else:
            conv.say(conv.t("not_understood"))
            await self._to_menu(conv, again=True)

    async def act(self, conv: Conversation, intent: str, entities: dict[str, Any]) -> None:
        """Serve an understood intent (also a "¿Te refieres...?" button pressed)."""
        verified = conv.verified
        if intent in TARGETS:
            if intent == "payment_promise" and "date" in entities:
                conv.data["promise_date"] = str(entities["date"])
            await self.need(conv, intent)
        elif intent == "greet":
            if verified:
                first = conv.data.get("first_name", "")
                conv.say(conv.t("greeting_client", first_name=first), conv.opts(*CLIENT_OPTIONS))
                conv.session.state = "client.menu"
            else:
                await self._run(conv, "main", "begin", {})
        elif intent in ("client", "document"):
            if verified:
                await self._run(conv, "client", "menu", {})
            elif "document" in entities:  # typed at the first menu: the question is skipped
                doc = str(entities["document"])
                await self._run(conv, "identify", "text", {"text": doc}, state="ask_document")
            else:
                await self._run(conv, "identify", "begin", {})
        elif intent == "agent":
            await self._run(conv, "agent", "begin", {})
        elif intent == "thanks":
            conv.say(conv.t("free.thanks"))
        elif intent == "goodbye":
            if verified:
                await self._run(conv, "client", "exit", {}, state="menu")
            else:
                conv.say(conv.t("free.goodbye"))
        elif intent in ("affirm", "deny"):
            await self.answer(conv, YES if intent == "affirm" else NO)
        else:
            conv.say(conv.t("not_understood"), self._offered(conv))

    async def need(self, conv: Conversation, intent: str) -> None:
        """A feature: through identification first when it is for verified customers only."""
        if not self.serves(intent):  # its flow is not built: say what the bot does
            conv.say(conv.t("not_understood"), self._offered(conv))
            return
        flow, trigger = TARGETS[intent]
        if self.flows.needs_verification(flow) and not conv.verified:
            conv.data["want"] = intent
            await self._run(conv, "identify", "begin", {})
            return
        prepare(conv, intent)
        await self._run(conv, flow, trigger, {})

    async def answer(self, conv: Conversation, ids: tuple[str, ...]) -> None:
        """ "Sí" / "no" to a pending yes/no question: the offered option they mean."""
        offered = {o.id for o in self._offered(conv)}
        chosen = next((i for i in ids if i in offered), None)
        flow, _, state = conv.session.state.partition(".")
        if chosen == "menu":
            await self._to_menu(conv, again=True)
        elif chosen is not None and self.flows.accepts(flow, state, chosen):
            conv.data.pop("opts", None)
            await self._run(conv, flow, chosen, {"arg": ""}, state=state)
        else:
            conv.say(conv.t("not_understood"), self._offered(conv))

    @staticmethod
    def _offered(conv: Conversation) -> list[Option]:
        return [Option(i, label) for i, label in conv.data.get("opts", [])]
