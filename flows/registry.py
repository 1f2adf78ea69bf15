"""All flows, each machine built once at start-up and shared by every conversation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transitions.extensions.asyncio import AsyncMachine

from flows.agent import AgentFlow
from flows.base import Flow
from flows.client import ClientFlow
from flows.fault import FaultFlow
from flows.identify import IdentifyFlow
from flows.main import MainFlow
from flows.noticeflow import NoticeFlow, ReminderFlow
from flows.payment_methods import PaymentMethodsFlow
from flows.payment_report import PaymentReportFlow
from flows.plans import PlansFlow
from flows.promise import PromiseFlow
from flows.service_request import ServiceRequestFlow

FLOW_CLASSES: tuple[type[Flow], ...] = (
    MainFlow,
    IdentifyFlow,
    ClientFlow,
    FaultFlow,
    PromiseFlow,
    PlansFlow,
    AgentFlow,
    PaymentReportFlow,
    PaymentMethodsFlow,
    ServiceRequestFlow,
    NoticeFlow,
    ReminderFlow,
)


@dataclass
class Flows:
    """The flows by name, their machines, and which triggers each state accepts."""

    flows: dict[str, Flow] = field(default_factory=dict)
    machines: dict[str, AsyncMachine] = field(default_factory=dict)
    triggers: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def accepts(self, flow: str, state: str, trigger: str) -> bool:
        """Whether ``trigger`` may fire in ``flow.state``."""
        return trigger in self.triggers.get((flow, state), frozenset())

    def takes_text(self, flow: str, state: str) -> bool:
        """Whether the state waits for free text."""
        return state in self.flows[flow].text_states

    def needs_verification(self, flow: str) -> bool:
        """Whether the flow is for verified customers only."""
        return self.flows[flow].needs_verification


def build_flows() -> Flows:
    """Build every machine once."""
    built = Flows()
    for cls in FLOW_CLASSES:
        flow = cls()
        machine = flow.build()
        built.flows[flow.name] = flow
        built.machines[flow.name] = machine
        for state in machine.states:
            built.triggers[(flow.name, state)] = frozenset(machine.get_triggers(state))
    return built


def split_state(full: str) -> tuple[str, str]:
    """``"fault.confirm"`` → ``("fault", "confirm")``."""
    flow, _, state = full.partition(".")
    return flow, state or "idle"


def describe() -> dict[str, Any]:
    """States and transitions of every flow, as data (for docs and diagrams)."""
    return {
        cls.name: {"states": cls().states(), "transitions": cls().transitions()}
        for cls in FLOW_CLASSES
    }
