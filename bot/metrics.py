"""Prometheus metrics, in one registry per process (served at ``/metrics``)."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_IN = Counter(
    "wispbot_messages_in_total", "Customer events received", ["channel"], registry=REGISTRY
)
MESSAGES_OUT = Counter(
    "wispbot_messages_out_total", "Replies delivered", ["channel"], registry=REGISTRY
)
DELIVERY_FAILURES = Counter(
    "wispbot_delivery_failures_total",
    "Replies that could not be delivered",
    ["channel"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "wispbot_duplicate_events_total",
    "Events dropped as re-deliveries",
    ["channel"],
    registry=REGISTRY,
)
REPLY_LATENCY = Histogram(
    "wispbot_reply_seconds",
    "From receiving a customer event to its replies being sent",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30),
    registry=REGISTRY,
)
WISPHUB_CALLS = Histogram(
    "wispbot_wisphub_seconds",
    "WispHub call latency by endpoint and outcome",
    ["endpoint", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
HANDOFFS_OPEN = Gauge(
    "wispbot_handoffs_open", "Conversations currently with a human agent", registry=REGISTRY
)
TICKETS_CREATED = Counter(
    "wispbot_tickets_created_total", "Tickets filed in WispHub", ["origin"], registry=REGISTRY
)
CIRCUIT_OPEN = Gauge(
    "wispbot_wisphub_circuit_open", "1 while the WispHub circuit breaker is open", registry=REGISTRY
)
FLOW_ERRORS = Counter(
    "wispbot_flow_errors_total",
    "Flow steps that failed and were rolled back",
    ["kind"],
    registry=REGISTRY,
)
RECOVERED_TURNS = Counter(
    "wispbot_recovered_turns_total",
    "Customer messages handled again because the process handling them died mid-turn",
    registry=REGISTRY,
)
LOCK_TIMEOUTS = Counter(
    "wispbot_lock_timeouts_total",
    "Customer events not handled: their conversation stayed locked by another turn",
    ["channel"],
    registry=REGISTRY,
)

RELAY_TOPICS_WAITING = Gauge(
    "wispbot_relay_topics_waiting",
    "Agents' topics with customer messages not yet posted (Telegram's 20 a minute per group)",
    registry=REGISTRY,
)
RELAY_OLDEST_SECONDS = Gauge(
    "wispbot_relay_oldest_seconds",
    "How long the oldest customer message waiting for the agents' group has waited",
    registry=REGISTRY,
)
RELAYS_POSTED = Counter(
    "wispbot_relays_posted_total",
    "Customer messages and bot notes posted in agents' topics (several may share one message)",
    registry=REGISTRY,
)
RELAY_GROUP_MESSAGES = Counter(
    "wispbot_relay_group_messages_total",
    "Messages the bot posted in the agents' group for relays",
    registry=REGISTRY,
)
INTENTS = Counter(
    "wispbot_intents",
    "Free-text messages understood, by intent (design.md section 8)",
    ["intent"],
    registry=REGISTRY,
)
NOT_UNDERSTOOD = Counter(
    "wispbot_not_understood",
    "Free-text messages the bot could not place (out of scope or too unsure)",
    registry=REGISTRY,
)
CSAT = Counter(
    "wispbot_csat_total",
    "Ratings customers gave (1-5) after a resolved ticket or a closed handoff",
    ["score"],
    registry=REGISTRY,
)

NOTICES_SENT = Counter(
    "wispbot_notices_sent_total",
    "Notices the bot sent first (issue 15), by kind and channel",
    ["kind", "channel"],
    registry=REGISTRY,
)
NOTICES_SKIPPED = Counter(
    "wispbot_notices_skipped_total",
    "Notices not sent: opted_out, duplicate, not_applicable, no_template, undelivered",
    ["reason"],
    registry=REGISTRY,
)


@functools.cache
def _child(metric: MetricWrapperBase, values: tuple[str, ...]) -> MetricWrapperBase:
    return metric.labels(*values)


def labelled(metric: _M, *values: str) -> _M:
    """``metric.labels(*values)``, looked up once per label set (hot paths call it per message)."""
    return _child(metric, values)  # type: ignore[return-value]


def count_understanding(intent: str, understood: bool) -> None:
    """Count one free-text message the dialog ran through understanding."""
    labelled(INTENTS, intent).inc()
    if not understood:
        NOT_UNDERSTOOD.inc()
