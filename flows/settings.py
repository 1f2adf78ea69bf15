"""The dialog's settings slice: hours, money, lockouts, timeouts, texts' language and the ticket
mapping. Built by the runtime from its settings at start-up; it never holds a token or a key."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from flows.formats import Money
from flows.types import DAYS

__all__ = ["BusinessHours", "DialogSettings", "Money", "TicketMapping"]


class BusinessHours(BaseModel):
    """Opening hours per weekday (0 = Monday); empty means always open."""

    spans: dict[int, list[tuple[time, time]]] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> BusinessHours:
        """Parse ``mon-fri 08:00-18:00; sat 08:00-13:00``."""
        spans: dict[int, list[tuple[time, time]]] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            m = re.fullmatch(
                r"([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}:\d{2})-(\d{1,2}:\d{2})", part.lower()
            )
            if not m or m[1] not in DAYS or (m[2] and m[2] not in DAYS):
                raise ValueError(f"cannot read {part!r}; expected e.g. 'mon-fri 08:00-18:00'")
            first, last = DAYS.index(m[1]), DAYS.index(m[2] or m[1])
            start, end = time.fromisoformat(m[3].zfill(5)), time.fromisoformat(m[4].zfill(5))
            if end <= start:
                raise ValueError(f"{part!r}: the end comes before the start")
            # A range may wrap past Sunday ("fri-mon"); it must never silently select no day,
            # which would read as "always open".
            for day in ((first + i) % 7 for i in range((last - first) % 7 + 1)):
                spans.setdefault(day, []).append((start, end))
        return cls(spans=spans)

    @property
    def always_open(self) -> bool:
        """No hours configured."""
        return not self.spans

    def is_open(self, weekday: int, at: time) -> bool:
        """Whether the agents work at this local weekday and time."""
        if self.always_open:
            return True
        return any(start <= at < end for start, end in self.spans.get(weekday, []))


@dataclass(frozen=True, slots=True)
class TicketMapping:
    """How the bot's tickets are filed: subject and priority per fault category, and the rest."""

    # category ("no_internet", "slow", "intermittent", "other"; the requests "payment",
    # "cancel_service", "move", "change_plan") -> (subject, priority)
    subjects: dict[str, tuple[str, str]]
    department: str
    origin: str
    technician_id: int | None = None  # when the client record names no technician

    def subject_for(self, category: str) -> tuple[str, str]:
        """Subject and priority for a fault category (an unknown one files as "other")."""
        return self.subjects.get(category, self.subjects["other"])


@dataclass(frozen=True, slots=True)
class DialogSettings:
    """What the dialog reads of the ISP's configuration (no secrets)."""

    tickets: TicketMapping
    language: str = "es"
    isp_name: str = ""
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("America/Bogota"))
    hours: BusinessHours = field(default_factory=BusinessHours)
    money: Money = field(default_factory=Money)
    session_idle_reset: int = 30 * 60
    verified_ttl: int = 15 * 60
    handoff_timeout: int = 10 * 60
    agent_name_shown: bool = True  # agents' messages signed "Ana (asesor/a): ..."
    promise_max_days: int = 5
    payment_methods_text: str = ""  # the ISP's own words on how to pay (PAYMENT_METHODS_TEXT)
    promise_reactivates: bool = True  # WispHub's promise reactivates a suspended service
    lockout_attempts: int = 3
    lookup_attempts: int = 5
    lockout_document_attempts: int = 5
    lockout_seconds: int = 30 * 60
