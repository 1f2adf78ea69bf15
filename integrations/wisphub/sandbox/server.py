"""A WispHub-compatible HTTP server with demo data, for the demo, the console chat and the tests.

It serves ``/api/`` the way ../shared/wisphub-api.md describes the real WispHub Net, quirks
included, so that a client which works here has met the real traps:

- ``Authorization: Api-Key <key>`` or 403; a path without its trailing slash gets a 301 (a POST
  loses its body); anything outside ``/api/`` is an HTML page with 200 (the wrong-base-URL trap);
- lists are ``{count, next, previous, results}`` paged by ``limit``/``offset`` with an ``http://``
  ``next``; unknown filters are ignored and return everything;
- tickets are created only from multipart forms (JSON → opaque 500, urlencoded → 415), with no
  idempotency; ping checks are asynchronous tasks to poll.

Faults (status, delay, count) can be injected in process (``Sandbox.add_fault``) or, for a bot
running as a subprocess, through the control endpoints (no auth, never recorded)::

    POST   /_sandbox/faults     {path, status, delay, count, method, body, after} (or a list)
    DELETE /_sandbox/faults     remove every fault
    GET    /_sandbox/requests   the recorded API requests, as JSON
    POST   /_sandbox/reset      the starting data and faults back, request log cleared
    POST   /_sandbox/clients    {id_servicio, ...fields}: deep-merge a patch into that client
    GET    /_sandbox/state      record counts and the payment promises received
    POST   /_sandbox/routers    {id, falla_general}: a router's outage on or off, for every
                                client behind it (the notices' demo and tests)
    POST   /_sandbox/tickets    {id_ticket, estado}: move a ticket ("2".."4" or a label)

A ping task's outcome follows the client: a router with ``falla_general`` or a suspended or
cancelled service → every ping times out; else the sandbox-only key ``_ping`` ("ok", "timeout",
"partial", "firewall", "error") decides, "ok" by default. Keys starting with ``_`` are never
served. "firewall" is a real tenant's shape: the private IP times out, the public IP answers
"host unreachable", and WispHub's summary counts those (``"ping-exitoso": "2 de 4"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from integrations.wisphub.sandbox.api import TenantApi
from integrations.wisphub.sandbox.demo_data import (
    FIRST_TICKET_ID,
    TICKET_STATES,
    Data,
    Record,
    complete_client,
    complete_invoice,
    complete_plan,
    complete_ticket,
    demo_data,
)
from integrations.wisphub.sandbox.faults import Fault, fault_kwargs, fault_response
from integrations.wisphub.sandbox.wire import (
    BODY,
    FORBIDDEN,
    NOT_FOUND,
    NOT_FOUND_HTML,
    SITE_HTML,
    Body,
    as_html,
    as_json,
    read_body,
)

SANDBOX_API_KEY = "sandbox-demo-key"

KINDS = ("clients", "tickets", "invoices", "plans", "payment_methods", "promises")
FIXTURE_KEYS = frozenset({"clients", "tickets", "invoices", "plans", "payment_methods", "faults"})


@dataclass
class RecordedRequest:
    """One API request the sandbox received, as a test or scenario wants to assert on it."""

    method: str
    path: str  # relative to the API base, e.g. "/tickets/"
    query: dict[str, str]
    fields: dict[str, str]  # form fields or flat JSON body values, as strings
    content_type: str
    at: float


class Sandbox(TenantApi):
    """A WispHub tenant in memory: its data, the requests it got, and the faults to inject."""

    def __init__(
        self,
        data: dict[str, list[dict[str, Any]]] | None = None,
        *,
        api_key: str = SANDBOX_API_KEY,
        ping_polls: int = 1,
    ) -> None:
        """Serve ``data`` (raw wire records by kind; kinds not given take the demo's)."""
        super().__init__(ping_polls=ping_polls)
        self.api_key = api_key
        self.url = ""  # set by running_sandbox / serve once bound
        base = demo_data()
        for kind, records in (data or {}).items():
            if kind not in KINDS:
                msg = f"unknown sandbox data kind {kind!r} (expected one of {', '.join(KINDS)})"
                raise ValueError(msg)
            base[kind] = copy.deepcopy(records)
        self._initial: Data = base  # already a private copy; _load copies it again
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._initial_faults: list[Fault] = []
        self._load(base)

    def _load(self, data: Data) -> None:
        # Mutate in place: callers may hold references to these lists.
        for kind in KINDS:
            getattr(self, kind)[:] = copy.deepcopy(data.get(kind, []))
        known = [FIRST_TICKET_ID - 1, *(int(t.get("id_ticket", 0)) for t in self.tickets)]
        self._next_ticket_id = max(known) + 1
        self.reindex()  # new records in the same list

    @classmethod
    def from_fixture(cls, fixture: dict[str, Any]) -> Sandbox:
        """Build from a scenario's ``wisphub:`` block; each given list replaces the demo's kind."""
        unknown = set(fixture) - FIXTURE_KEYS
        if unknown:
            msg = f"unknown wisphub fixture keys: {', '.join(sorted(unknown))}"
            raise ValueError(msg)
        data = demo_data()
        if "plans" in fixture:
            data["plans"] = [
                complete_plan(p, index=i) for i, p in enumerate(_records(fixture, "plans"))
            ]
        if "clients" in fixture:
            taken: set[str] = set()
            given = _records(fixture, "clients")
            # Slugs given explicitly win; derived ones avoid them.
            taken.update(str(c["usuario"]) for c in given if c.get("usuario"))
            data["clients"] = [
                complete_client(c, taken=taken, plans=data["plans"], index=i)
                for i, c in enumerate(given)
            ]
        if "tickets" in fixture:
            data["tickets"] = [
                complete_ticket(t, clients=data["clients"], index=i)
                for i, t in enumerate(_records(fixture, "tickets"))
            ]
        if "invoices" in fixture:
            data["invoices"] = [
                complete_invoice(inv, clients=data["clients"], index=i)
                for i, inv in enumerate(_records(fixture, "invoices"))
            ]
        if "payment_methods" in fixture:
            data["payment_methods"] = _records(fixture, "payment_methods")
        sandbox = cls(data)
        for spec in _records(fixture, "faults"):
            sandbox.add_fault(**fault_kwargs(spec))
        sandbox._initial_faults = list(sandbox._faults)
        return sandbox

    # -- faults and state ---------------------------------------------------------------------

    def add_fault(
        self,
        path: str,
        *,
        status: int = 500,
        delay: float = 0.0,
        count: int | None = 1,
        method: str | None = None,
        body: str | None = None,
        after: bool = False,
    ) -> None:
        """Answer requests whose API path matches ``path`` (a regex) with ``status``.

        ``status`` 0 with a ``delay`` only slows the real answer down. ``count`` None = forever.
        ``after``: the request is carried out (a ticket is created) and only its answer is
        replaced, as when WispHub's proxy answers 502 to a POST that worked.
        """
        method = method.upper() if method else None
        self._faults.append(Fault(re.compile(path), status, delay, count, method, body, after))

    def set_outage(self, router_id: int, on: bool, description: str = "") -> list[int]:
        """Turn a router's known outage on or off for every client behind it; their ids."""
        changed = []
        for client in self.clients:
            router = client.get("router") or {}
            if str(router.get("id")) == str(router_id):
                router["falla_general"] = on
                router["falla_general_descripcion"] = description if on else ""
                changed.append(int(client["id_servicio"]))
        return changed

    def set_ticket_status(self, ticket_id: int, status: str) -> bool:
        """Move a ticket to a state (its code "1".."4" or its label); False when unknown."""
        label = TICKET_STATES.get(str(status), str(status))
        for ticket in self.tickets:
            if str(ticket.get("id_ticket")) == str(ticket_id):
                ticket["estado"] = label
                return True
        return False

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._faults.clear()

    def reset(self) -> None:
        """Back to the data (and fixture faults) this sandbox started with; the log is cleared."""
        self._load(self._initial)
        self._faults = list(self._initial_faults)
        self.requests.clear()
        self._tasks.clear()

    def _take_fault(self, path: str, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.method not in (None, method) or not fault.pattern.search(path):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    # -- the app ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application serving the API, the control endpoints and the HTML site."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sandbox/"):
            return await self._control(request)
        if path != "/api" and not path.startswith("/api/"):
            # The tenant's web site: a login page. A client pointed here must not parse it.
            return as_html(SITE_HTML)
        rel = path[len("/api") :]
        body = await read_body(request)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=rel,
                query=dict(request.query),
                fields=body.fields,
                content_type=request.content_type if request.body_exists else "",
                at=time.time(),
            )
        )
        fault = self._take_fault(rel, request.method)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.after:
                # WispHub did the work (the ticket exists), then the proxy answered an error.
                await self._route(request, rel, body)
                return fault_response(fault)
            if fault.status:
                return fault_response(fault)
        return await self._route(request, rel, body)

    async def _route(self, request: web.Request, rel: str, body: Body) -> web.StreamResponse:
        path = request.path
        if not rel.endswith("/"):
            # Django's APPEND_SLASH: a redirect the client would follow with a GET and no body.
            location = f"http://{request.host}{path}/"
            if request.query_string:
                location += f"?{request.query_string}"
            return web.Response(status=301, headers={"Location": location})
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(rel)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            if not self._authorized(request):
                return as_json(FORBIDDEN, 403)
            request[BODY] = body
            return await handler(request, match)
        if allowed:
            if not self._authorized(request):
                return as_json(FORBIDDEN, 403)
            return as_json({"detail": f'Método "{request.method}" no permitido.'}, 405)
        return as_html(NOT_FOUND_HTML, 404)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expected = f"Api-Key {self.api_key}"
        return hmac.compare_digest(header.encode(), expected.encode())

    # -- control endpoints ----------------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.StreamResponse:
        action = (request.method, request.path.rstrip("/"))
        try:
            if action == ("POST", "/_sandbox/faults"):
                specs = await request.json()
                for spec in specs if isinstance(specs, list) else [specs]:
                    self.add_fault(**fault_kwargs(spec))
                return as_json({"faults": len(self._faults)}, 201)
            if action == ("DELETE", "/_sandbox/faults"):
                self.clear_faults()
                return as_json({"faults": 0})
            if action == ("GET", "/_sandbox/requests"):
                return as_json([asdict(r) for r in self.requests])
            if action == ("POST", "/_sandbox/reset"):
                self.reset()
                return as_json({"reset": True})
            if action == ("POST", "/_sandbox/clients"):
                patches = await request.json()
                changed = []
                for patch in patches if isinstance(patches, list) else [patches]:
                    client = self._client(patch.get("id_servicio", ""))
                    if client is None:
                        return as_json(NOT_FOUND, 404)
                    _merge(client, {k: v for k, v in patch.items() if k != "id_servicio"})
                    changed.append(client["id_servicio"])
                self.reindex()  # a patch may change a document
                return as_json({"updated": changed})
            if action == ("POST", "/_sandbox/routers"):
                spec = await request.json()
                on = bool(spec.get("falla_general"))
                ids = self.set_outage(spec["id"], on, str(spec.get("descripcion", "")))
                return as_json({"updated": ids})
            if action == ("POST", "/_sandbox/tickets"):
                spec = await request.json()
                if not self.set_ticket_status(spec["id_ticket"], str(spec["estado"])):
                    return as_json(NOT_FOUND, 404)
                return as_json({"updated": [spec["id_ticket"]]})
            if action == ("GET", "/_sandbox/state"):
                state = {k: len(getattr(self, k)) for k in KINDS}
                return as_json({**state, "promises_list": self.promises})
        except (
            json.JSONDecodeError,
            TypeError,
            ValueError,
            KeyError,
            AttributeError,
            re.error,
        ) as err:
            return as_json({"detail": f"bad control request: {err}"}, 400)
        return as_json({"detail": "unknown control endpoint"}, 404)


def _records(fixture: dict[str, Any], kind: str) -> list[Record]:
    value = fixture.get(kind) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        msg = f"wisphub fixture {kind!r} must be a list of mappings"
        raise ValueError(msg)
    return [dict(v) for v in value]


def _merge(target: Record, patch: Record) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


@contextlib.asynccontextmanager
async def running_sandbox(
    sandbox: Sandbox | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Sandbox]:
    """Serve ``sandbox`` (the demo if None) over real HTTP; ``sb.url`` is its API base URL."""
    sb = sandbox if sandbox is not None else Sandbox()
    # shutdown_timeout: a request held by a delay fault must not keep a test waiting a minute.
    runner = web.AppRunner(sb.make_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        sb.url = f"http://{host}:{bound[1]}/api/"
        yield sb
    finally:
        await runner.cleanup()


async def serve(host: str, port: int) -> None:
    """Serve the demo sandbox until SIGINT or SIGTERM (``python -m bot sandbox``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(sig, stop.set)
    async with running_sandbox(Sandbox(), host, port) as sb:
        # The demo key is public by design: it only opens this local sandbox.
        print(f"WispHub sandbox serving {sb.url} (API key: {SANDBOX_API_KEY})", flush=True)
        await stop.wait()
