"""What every flow builds on: the context handed in at start-up, the per-event model, the Flow base.

Each flow is a ``transitions`` ``AsyncMachine`` built ONCE with ``model=None`` and shared by all
conversations: the dialog (``flows.dialog``) sets ``conv.state`` and fires
``machine.events[trigger].trigger(conv)`` (the transitions FAQ's "one machine, many models"),
so nothing is constructed per message.
Callbacks receive the ``EventData`` (``send_event=True``); ``event.model`` is the ``Conversation``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from transitions.extensions.asyncio import AsyncEventData, AsyncMachine

from flows.ports import Clock, DialogStore, HandoffPort, SessionRecord, Subscriptions
from flows.settings import DialogSettings
from flows.texts import Texts
from flows.types import ConvKey, Inbound, Option, Outbound
from flows.understand import Understanding
from integrations.wisphub.models import (
    Client,
    Invoice,
    PaymentMethod,
    PingResult,
    Plan,
    Ticket,
    TicketRequest,
)

if TYPE_CHECKING:
    from transitions.extensions.asyncio import AsyncCallback as Callback  # stubs only
    from transitions.extensions.asyncio import AsyncCallbackFunc  # declared in its stubs only


class WispHubPort(Protocol):
    """The part of ``WispHubClient`` the flows use."""

    async def find_by_document(self, document: str) -> list[Client]: ...
    async def find_by_phone(self, phone: str) -> list[Client]: ...
    async def plans(self) -> list[Plan]: ...
    async def open_tickets(self, service_id: int) -> list[Ticket]: ...
    async def create_ticket(self, req: TicketRequest) -> Ticket: ...
    async def pending_invoices(self, username: str) -> list[Invoice]: ...
    async def payment_methods(self) -> list[PaymentMethod]: ...
    async def payment_promise(self, invoice_id: int, deadline: date) -> None: ...
    async def ping(self, service_id: int) -> PingResult: ...


# The runtime's store: at least the slice the dialog uses (the runtime reads the rest of it).
StoreT = TypeVar("StoreT", bound=DialogStore)


@dataclass
class FlowContext(Generic[StoreT]):
    """Everything flows may touch, injected once at start-up."""

    wisphub: WispHubPort
    store: StoreT
    settings: DialogSettings
    handoff: HandoffPort
    clock: Clock
    # Free text (flows.route); None: only options and commands are understood.
    understanding: Understanding | None = None
    # Notices (flows/notices.py); None: disabled (NOTIFY_ENABLED=false), nothing is promised.
    subscriptions: Subscriptions | None = None

    def local_now(self) -> datetime:
        """The current time in the ISP's time zone."""
        return datetime.fromtimestamp(self.clock(), tz=self.settings.tz)

    def agents_open(self) -> bool:
        """Agents configured and within business hours."""
        if not self.handoff.configured:
            return False
        now = self.local_now()
        return self.settings.hours.is_open(now.weekday(), now.time())


class Conversation:
    """The model a flow machine acts on during one event (identity equality on purpose)."""

    state: str

    def __init__(
        self, key: ConvKey, session: SessionRecord, inbound: Inbound | None, ctx: FlowContext[Any]
    ) -> None:
        self.key = key
        self.session = session
        self.data: dict[str, Any] = session.data
        self.inbound = inbound
        self.ctx = ctx
        self.t = Texts(session.lang, ctx.settings.money.locale)
        self.replies: list[Outbound] = []
        self.goto: tuple[str, str] | None = None  # (flow, trigger) to fire after this one
        self.tickets: list[str] = []  # origins of the tickets filed in this turn (metrics)
        self.intents: list[str] = []  # free text understood in this turn (metrics)
        self.csat: int | None = None  # a rating the customer gave in this turn (metrics)
        self.state = "idle"

    # -- replies ---------------------------------------------------------------------------
    def say(self, text: str, options: Sequence[Option] = ()) -> None:
        """Queue a reply; a reply with options becomes the one typed answers are matched to."""
        self.replies.append(Outbound(self.key, text, tuple(options)))
        if options:
            self.data["opts"] = [[o.id, o.label] for o in options]

    def opts(self, *ids: str) -> list[Option]:
        """Options whose labels come from the catalogue (``opt.<id>``)."""
        return [Option(i, self.t(f"opt.{i}")) for i in ids]

    def jump(self, flow: str, trigger: str = "begin") -> None:
        """Continue in another flow once this transition is done."""
        self.goto = (flow, trigger)

    # -- identity --------------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Current epoch time (simulated in scenarios)."""
        return self.ctx.clock()

    @property
    def verified(self) -> bool:
        """Identity verified and not expired."""
        until = self.session.verified_until
        return until is not None and until > self.now and "service_id" in self.data

    def end_verification(self) -> None:
        """Forget who the customer is."""
        self.session.verified_until = None
        for name in ("doc", "service_id", "services", "first_name", "name_tries", "proven"):
            self.data.pop(name, None)

    async def client(self) -> Client:
        """The verified client's service record (cached look-up by document)."""
        records = await self.ctx.wisphub.find_by_document(self.data["doc"])
        for record in records:
            if record.service_id == self.data["service_id"]:
                return record
        msg = "the verified service is no longer in WispHub"
        raise LookupError(msg)

    def greeting(self) -> str:
        """The greeting, with the ISP's name when it has one."""
        isp = self.ctx.settings.isp_name
        return self.t("greeting", isp=isp) if isp else self.t("greeting_no_isp")

    def money(self, amount: Any) -> str:
        """An amount in the ISP's currency, formatted for the conversation's language."""
        return self.ctx.settings.money(amount, self.t.lang)


def model(ev: AsyncEventData) -> Conversation:
    """The conversation a transition acts on."""
    return cast(Conversation, ev.model)


class FlowMachine(AsyncMachine):
    """An ``AsyncMachine`` that runs a hook's callbacks one after another, in the caller's task.

    transitions runs each hook's callbacks through ``asyncio.gather``, which makes a task per
    callback: a measurable share of every message under load. A flow's callbacks are short steps
    declared in order; run in line they cost no task and their effects keep the declared order.
    """

    @staticmethod
    async def await_all(callables: list[AsyncCallbackFunc]) -> list[bool | None]:
        return [await func() for func in callables]

    async def callbacks(  # type: ignore[override]  # as the stubs declare it
        self, funcs: Iterable[Callback], event_data: AsyncEventData
    ) -> None:
        # Most of a transition's hooks are empty lists: no list, partials or await_all for them.
        for func in funcs:
            await self.callback(func, event_data)

    async def process_context(self, func: Callable[[], Awaitable[None]], model: object) -> bool:
        """A trigger, without transitions' record of the tasks running each model's transitions
        (kept so that a transition starting on a model cancels one still running on it). Every
        turn has a model of its own and fires one trigger at a time in its task: there is never
        one to cancel, and the record (a list per model id, left behind empty) cost every
        trigger. A cancellation is still "no transition", as in transitions (the dialog ends the
        turn as cancelled)."""
        try:
            return await self._process_async(func, model)
        except asyncio.CancelledError:
            return False


class Flow:
    """A dialog flow: its transition table as data plus the callbacks it names."""

    name: ClassVar[str]
    # States that take free text: their trigger is "text".
    text_states: ClassVar[frozenset[str]] = frozenset()
    # States that need a verified customer.
    needs_verification: ClassVar[bool] = False

    def states(self) -> list[dict[str, Any]]:
        """The machine's states (``idle`` is where a flow rests when the customer is elsewhere)."""
        raise NotImplementedError

    def transitions(self) -> list[dict[str, Any]]:
        """The machine's transition table."""
        raise NotImplementedError

    def build(self) -> AsyncMachine:
        """Build the shared machine once."""
        return FlowMachine(
            model=None,
            states=self.states(),
            transitions=self.transitions(),
            initial="idle",
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            name=self.name,
        )
