"""The sandbox's ping tasks: what a router's pings report through WispHub, per client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from integrations.wisphub.sandbox.demo_data import Record


@dataclass
class PingTask:
    """A ping task to poll: PENDING/PROCESS for ``polls_left`` polls, then its outcome."""

    polls_left: int
    status: str  # the final status: SUCCESS or FAILURE
    result: Any
    polled: int = 0


def _public_ip(client: Record) -> str:
    """A made-up public address for the client's router (the firewall case pings it too)."""
    sid = int(client.get("id_servicio") or 0)
    return f"181.{60 + sid // 250 % 100}.{sid % 250 + 2}.{40 + sid % 200}"


def _ping_line(i: int, host: str, status: str) -> Record:
    """One ``ping-N`` line as RouterOS reports it through WispHub: every value a string."""
    if status == "ok":
        rtt = f"{11 + (i * 7) % 9}ms{(i * 137) % 1000}us"
        return {
            "received": "1",
            "host": host,
            "sent": "1",
            "packet-loss": "0",
            "seq": "0",
            "time": rtt,
            "ttl": "64",
            "min-rtt": rtt,
            "max-rtt": rtt,
            "avg-rtt": rtt,
            "size": "56",
        }
    line: Record = {
        "status": status,
        "host": host,
        "received": "0",
        "sent": "1",
        "packet-loss": "100",
        "seq": "0",
    }
    if status == "host unreachable":
        line.update({"time": f"{560 + i * 19}ms", "ttl": "64", "size": "84"})
    return line


def ping_outcome(client: Record, pings: int) -> tuple[str, Any]:
    """What a ping task ends with: (Celery status, result).

    "firewall" is the real shape of a client whose CPE drops ICMP: the private IP times out,
    the public IP answers "host unreachable", and WispHub's summary counts the latter as
    answered (``"ping-exitoso": "2 de 4"``).
    """
    host = str(client.get("ip", ""))
    router = client.get("router") or {}
    mode = str(client.get("_ping", "ok"))
    if router.get("falla_general") or client.get("estado") in {"Suspendido", "Cancelado"}:
        mode = "timeout"
    if mode == "error":
        name = router.get("nombre", "router")
        return "FAILURE", f"Error: no se pudo conectar con el router {name} (API 8728): timed out"
    items: list[dict[str, Any]] = []
    ok_count = 0
    for i in range(1, pings + 1):
        if mode == "firewall":
            # Alternates private (timeout) and public (unreachable) addresses, private first.
            public = i % 2 == 0
            line = _ping_line(
                i,
                _public_ip(client) if public else host,
                "host unreachable" if public else "timeout",
            )
            ok_count += public
        else:
            # "partial": every other ping is lost, the first one answers.
            ok = mode == "ok" or (mode == "partial" and i % 2 == 1)
            ok_count += ok
            line = _ping_line(i, host, "ok" if ok else "timeout")
        items.append({f"ping-{i}": line})
    items.append({"ping-exitoso": f"{ok_count} de {pings}"})
    return "SUCCESS", items
