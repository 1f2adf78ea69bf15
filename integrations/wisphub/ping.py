"""Reading a WispHub ping task's result: reachable, unreachable, partly, or unknown.

The router reports one ``{"ping-N": {...}}`` line per ping (RouterOS fields, every value a
string) and WispHub adds a summary, ``{"ping-exitoso": "2 de 4"}``; a router that could not be
reached leaves an error string instead.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from integrations.wisphub.models import PingResult


def _ping_counts(item: Any) -> tuple[int, int, list[float]] | None:
    """(sent, received, rtts) of one ``{"ping-N": {...}}`` entry; None when unreadable."""
    if not isinstance(item, dict):
        return None
    sent = received = 0
    rtts: list[float] = []
    found = False
    for key, value in item.items():
        if not str(key).startswith("ping-") or not isinstance(value, dict):
            continue
        found = True
        status = str(value.get("status", "")).lower()
        try:
            s = int(value.get("sent", 1))
            r = int(value["received"]) if "received" in value else int(status not in _NO_REPLY)
        except (TypeError, ValueError):
            return None
        sent, received = sent + s, received + r
        rtt = _rtt_ms(value.get("avg-rtt"))
        if r and rtt is not None:
            rtts.append(rtt)
    return (sent, received, rtts) if found else None


_NO_REPLY = frozenset({"timeout", "no reply", "host unreachable", "unreachable", "fail", "failed"})
_SUMMARY = re.compile(r"\s*(\d+)\s*de\s*(\d+)")


def _rtt_ms(value: Any) -> float | None:
    """RouterOS round-trip times: ``"12ms"``, ``"1ms250us"``, ``"800us"``, ``12``."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)ms)?(?:(\d+)us)?", text)
    if m and (m[1] or m[2]):
        return float(m[1] or 0) + int(m[2] or 0) / 1000
    try:
        return float(text)
    except ValueError:
        return None


def classify_ping(result: Any) -> PingResult:
    """Turn a ping task's ``result`` into ok / no_response / partial / unknown.

    WispHub's own ``"ping-exitoso": "2 de 4"`` decides when present: it counts a public IP that
    answers "host unreachable" (a client behind a firewall) as reachable, which the per-ping
    lines (private IP timed out, public IP unreachable) cannot tell. The lines decide only when
    there is no summary; lines that are all router errors mean the check itself did not run.
    """
    items = result if isinstance(result, list) else [result]
    sent = received = 0
    rtts: list[float] = []
    summary: tuple[int, int] | None = None
    lines = errors = 0
    for item in items:
        if isinstance(item, dict) and "ping-exitoso" in item:
            m = _SUMMARY.match(str(item["ping-exitoso"]))
            if m:
                summary = (int(m[2]), int(m[1]))
            continue
        counts = _ping_counts(item)
        if counts is None:
            errors += 1  # a router error string (or anything else unreadable)
            continue
        lines += 1
        sent, received = sent + counts[0], received + counts[1]
        rtts.extend(counts[2])
    if lines == 0 and errors:
        return PingResult(status="unknown")
    if summary is not None:
        sent, received = summary
    elif errors:
        return PingResult(status="unknown")
    if sent <= 0:
        return PingResult(status="unknown")
    avg = round(sum(rtts) / len(rtts), 2) if rtts else None
    status: Literal["ok", "no_response", "partial"]
    if received <= 0:
        status = "no_response"
    elif received >= sent:
        status = "ok"
    else:
        status = "partial"
    return PingResult(status=status, sent=sent, received=min(received, sent), avg_rtt_ms=avg)


__all__ = ["classify_ping"]
