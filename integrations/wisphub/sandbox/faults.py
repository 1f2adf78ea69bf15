"""Faults injected into the sandbox: which requests they hit and what WispHub would answer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from integrations.wisphub.sandbox.wire import (
    FORBIDDEN,
    NOT_FOUND,
    SERVER_ERROR_HTML,
    as_html,
    as_json,
)

_PROXY_HTML = (
    "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center>"
    "<hr><center>nginx</center></body></html>\n"
)


@dataclass
class Fault:
    """One injected fault: the API paths (a regex) and method it hits, and its answer."""

    pattern: re.Pattern[str]
    status: int
    delay: float
    count: int | None
    method: str | None
    body: str | None
    after: bool = False  # handle the request for real, then answer the fault instead


def fault_kwargs(spec: Any) -> dict[str, Any]:
    """``Sandbox.add_fault`` arguments from a JSON or YAML fault spec; ValueError when bad."""
    if not isinstance(spec, dict) or "path" not in spec:
        msg = "a fault needs at least a 'path' regex"
        raise ValueError(msg)
    unknown = set(spec) - {"path", "status", "delay", "count", "method", "body", "after"}
    if unknown:
        msg = f"unknown fault keys: {', '.join(sorted(unknown))}"
        raise ValueError(msg)
    kwargs: dict[str, Any] = {"path": str(spec["path"])}
    if "status" in spec:
        kwargs["status"] = int(spec["status"])
    if "delay" in spec:
        kwargs["delay"] = float(spec["delay"])
    if "count" in spec:
        kwargs["count"] = None if spec["count"] is None else int(spec["count"])
    for key in ("method", "body"):
        if spec.get(key) is not None:
            kwargs[key] = str(spec[key])
    if "after" in spec:
        kwargs["after"] = bool(spec["after"])
    return kwargs


def fault_response(fault: Fault) -> web.Response:
    """What WispHub (or the proxy in front of it) answers for this fault."""
    if fault.body is not None:
        text = fault.body.lstrip()
        if text[:1] in ("{", "["):
            ctype = "application/json"
        elif text[:1] == "<":
            ctype = "text/html"
        else:
            ctype = "text/plain"
        return web.Response(text=fault.body, status=fault.status, content_type=ctype)
    if fault.status == 500:
        return as_html(SERVER_ERROR_HTML, 500)
    if fault.status >= 500:
        # 502/503/504 come from the reverse proxy in front of WispHub.
        reasons = {
            502: "502 Bad Gateway",
            503: "503 Service Temporarily Unavailable",
            504: "504 Gateway Time-out",
        }
        label = reasons.get(fault.status, f"{fault.status} Error")
        return as_html(_PROXY_HTML.format(status=label), fault.status)
    if fault.status == 403:
        return as_json(FORBIDDEN, 403)
    if fault.status == 404:
        return as_json(NOT_FOUND, 404)
    if fault.status == 429:
        return as_json({"detail": "Solicitud fue regulada (throttled)."}, 429)
    return as_json({"detail": f"Error {fault.status}."}, fault.status)
