"""The store's interfaces: what the runtime asks of sessions, the turn gate, counters and topics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date

from bot.store.session import Session
from flows.ports import Promise
from flows.types import ConvKey


@dataclass(frozen=True)
class TurnStart:
    """What opening a customer's turn found (``SessionStore.open_turn``)."""

    claimed: bool  # False: a repeat of an event already seen; nothing else was done
    hits: int  # events in the conversation's rate window, this one included (0 for a repeat)
    locked: bool  # the conversation lock is now held by this store
    # The turn's place: the token of the lock it holds (``locked``) or of its place in the
    # conversation's line of waiters (busy); None for a repeat or a message over the limit.
    # Given back to ``lock``, ``release`` and ``save_and_release``, it tells this turn's lock
    # from that of the next turn of the same conversation in the same process.
    ticket: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Orphan:
    """A turn of a dead process, taken over (``SessionStore.take_orphans``)."""

    event: str  # the event's JSON, to handle again
    # Its place, taken over in its conversation's line: handle it with this start (no
    # ``open_turn``). None: it had no place left; handle it as a new event.
    start: TurnStart | None = None


class Sessions(ABC):
    """A conversation's session: read, saved with an idle TTL, moved, listed."""

    @abstractmethod
    async def load(self, key: ConvKey) -> Session | None:
        """The conversation's session, or None when there is none (or it expired)."""

    @abstractmethod
    async def save(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        closes: str | None = None,
        *,
        ticket: str | None = None,
    ) -> None:
        """Store the session with an idle TTL in seconds (one write). ``closes``: the event id
        of the turn whose outcome this save makes durable; it leaves the journal. Within a
        turn (``ticket``, or a lock this store holds) the save is fenced: ``LockLost`` when the
        turn's place was taken over, and nothing is saved."""

    @abstractmethod
    async def move(self, old: ConvKey, new: ConvKey) -> bool:
        """Give the session of ``old`` to ``new`` (the customer's number changed), keeping its
        TTL; False, and nothing changed, when ``old`` has none or ``new`` already has one."""

    @abstractmethod
    def scan_conversations(self) -> AsyncIterator[tuple[ConvKey, Session]]:
        """Every stored conversation (unreadable ones are logged and skipped)."""


class TurnGate(ABC):
    """The turn gate: dedupe, the conversation lock and its line of turns, the journal of
    turns in flight (taken over when their process died) and the inbox a stopping process fills."""

    @abstractmethod
    async def claim_event(self, channel: str, event_id: str, ttl: int = 86400) -> bool:
        """True the first time an event id is seen on a channel, False for every repeat."""

    @abstractmethod
    async def unclaim_event(self, channel: str, event_id: str) -> None:
        """Forget an event id, so the event is handled when it comes again (it was not)."""

    @abstractmethod
    async def open_turn(
        self,
        key: ConvKey,
        event_id: str,
        *,
        rate_scope: str,
        rate_window: int,
        rate_limit: int,
        lease: float,
        seen_ttl: int = 86400,
        journal: str | None = None,
    ) -> TurnStart:
        """Open a customer's turn in one step: claim the event; when it is new, count it in the
        rate window; when within ``rate_limit``, write ``journal`` (the event's JSON) in the
        journal of turns in flight, try the conversation lock once (no waiting) and
        read the session for the next ``load``. A busy conversation puts the turn in its line
        of waiters (``TurnStart.ticket``), for the caller to wait on with ``lock``. A lock taken
        here is given back with ``release`` or ``save_and_release``."""

    @abstractmethod
    def lock(
        self,
        key: ConvKey,
        *,
        timeout: float = 30.0,
        wait: float = 20.0,
        ticket: str | None = None,
    ) -> AbstractAsyncContextManager[str]:
        """Hold the conversation lock, waiting ``wait`` s at most for it.

        ``timeout`` is the lock's lease: renewed while the lock is held; it never cuts a
        running turn short, and a lapsed lock goes to nobody but its holder while that
        holder's process lives (a dead process's place is taken over or passed over).
        Waiters are served first come, first served; ``ticket`` is the place ``open_turn``
        already took in the line (else the caller joins the line's end).

        It yields the lock's place (its token): given to ``save`` and ``save_and_release`` as
        their ``ticket``, they are fenced as a customer's turn is (``LockLost`` once the place
        was taken over), and never use another turn's lock of the same conversation.
        """

    @abstractmethod
    async def release(self, key: ConvKey, ticket: str | None = None) -> None:
        """Give back the conversation lock this store holds (nothing when none is held).

        With ``ticket``, only the lock of that turn: the next turn of the conversation may
        already hold the lock (handed over by this turn's ``save_and_release``).
        """

    @abstractmethod
    async def save_and_release(
        self,
        key: ConvKey,
        session: Session,
        ttl: int,
        ticket: str | None = None,
        closes: str | None = None,
    ) -> None:
        """Save the session (``closes`` as in ``save``), then give back the lock (one step);
        the lock goes to the conversation's oldest waiter."""

    @abstractmethod
    async def drop_turn(self, key: ConvKey, event_id: str) -> None:
        """Take a turn out of the journal without a save (it ended some other way)."""

    @abstractmethod
    async def take_orphans(self, older_than: float) -> list[Orphan]:
        """Take over the journal's turns whose process died (its key lapsed while the store was
        up for ``older_than`` s): each keeps its place in its conversation's line, now this
        store's, so it is handled in its order (``Orphan.start``). A turn that had no place
        left (written ``older_than`` s ago or more) is handed back as a new event (its dedupe
        mark cleared). Each is taken by one caller only."""

    @abstractmethod
    async def push_inbox(self, raw: str) -> None:
        """Keep an event a stopping process received but could not handle, for the next one."""

    @abstractmethod
    async def pop_inbox(self, limit: int = 1000) -> list[str]:
        """Take the kept events, oldest first."""


class Counters(ABC):
    """Counters in fixed windows: failed verifications (lockouts) and the flood rate."""

    @abstractmethod
    async def register_failure(self, scope: str, window: int) -> int:
        """Count one failure in a window of ``window`` s started by the first; return the count."""

    @abstractmethod
    async def failures(self, scope: str) -> int:
        """Failures counted in the current window (0 when none)."""

    @abstractmethod
    async def failures_many(self, scopes: list[str]) -> list[int]:
        """``failures`` of several scopes at once, in their order."""

    @abstractmethod
    async def clear_failures(self, *scopes: str) -> None:
        """Reset the failure counters of these scopes (a successful verification)."""

    @abstractmethod
    async def hit_rate(self, scope: str, window: int) -> int:
        """Count one hit in a fixed window of ``window`` s; return the hits so far in it."""


class TopicMap(ABC):
    """Which conversation an agents' forum topic belongs to."""

    @abstractmethod
    async def set_topic(self, thread_id: int, key: ConvKey) -> None:
        """Remember which conversation an agents' forum topic belongs to (for the store's
        ``topic_ttl``, renewed by each ``set_topic`` and ``get_topic``)."""

    @abstractmethod
    async def get_topic(self, thread_id: int) -> ConvKey | None:
        """The conversation of a forum topic, or None; a topic in use keeps its mapping."""


class Promises(ABC):
    """The payment promises the bot registered (``flows.ports.PromiseLedger``)."""

    @abstractmethod
    async def remember(
        self, service_id: int, day: date, invoices: Sequence[int], until: float
    ) -> None:
        """Remember the service's promise until ``until`` (epoch seconds); one already past
        is not stored. A later promise of the service replaces it."""

    @abstractmethod
    async def active(self, service_id: int) -> Promise | None:
        """The service's promise until its ``until``, or None."""


class SessionStore(Sessions, TurnGate, Counters, TopicMap, Promises):
    """Where sessions, locks, dedupe marks, counters, topic mappings and promises live."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""
