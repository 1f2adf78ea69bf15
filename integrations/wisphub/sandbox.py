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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from integrations.wisphub.demo_data import (
    CLIENT_STATES,
    FIRST_TICKET_ID,
    INVOICE_STATES,
    SUBJECTS,
    TECHNICIANS,
    TICKET_PRIORITIES,
    TICKET_STATE_ALIASES,
    TICKET_STATES,
    Data,
    Record,
    complete_client,
    complete_invoice,
    complete_plan,
    complete_ticket,
    demo_data,
)

__all__ = [
    "SANDBOX_API_KEY",
    "RecordedRequest",
    "Sandbox",
    "demo_data",
    "running_sandbox",
    "serve",
]

SANDBOX_API_KEY = "sandbox-demo-key"

KINDS = ("clients", "tickets", "invoices", "plans", "payment_methods", "promises")
FIXTURE_KEYS = frozenset({"clients", "tickets", "invoices", "plans", "payment_methods", "faults"})
DEFAULT_LIMIT = 50
BOGOTA = timezone(timedelta(hours=-5))  # Colombia has no daylight saving time

FORBIDDEN = {"detail": "Usted no tiene permiso para realizar esta acción."}
NOT_FOUND = {"detail": "No encontrado."}
REQUIRED = "Este campo es requerido."
BLANK = "Este campo no puede estar en blanco."
# What Django answers for an unhandled exception with DEBUG off: not JSON.
SERVER_ERROR_HTML = (
    '<!doctype html>\n<html lang="en">\n<head><title>Server Error (500)</title></head>\n'
    "<body><h1>Server Error (500)</h1><p></p></body>\n</html>\n"
)
NOT_FOUND_HTML = (
    '<!doctype html>\n<html lang="en">\n<head><title>Not Found</title></head>\n'
    "<body><h1>Not Found</h1><p>The requested resource was not found on this server.</p>"
    "</body>\n</html>\n"
)
SITE_HTML = """<!DOCTYPE html>
<html lang="es">
<head><meta charset="utf-8"><title>WispHub | Iniciar sesión</title></head>
<body><main><h1>WispHub</h1><form method="post" action="/accounts/login/">
<label>Usuario <input name="login"></label><label>Contraseña <input type="password"
name="password"></label><button>Ingresar</button></form></main></body>
</html>
"""
_PROXY_HTML = (
    "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center>"
    "<hr><center>nginx</center></body></html>\n"
)

Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    """One API request the sandbox received, as a test or scenario wants to assert on it."""

    method: str
    path: str  # relative to the API base, e.g. "/tickets/"
    query: dict[str, str]
    fields: dict[str, str]  # form fields or flat JSON body values, as strings
    content_type: str
    at: float


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    status: int
    delay: float
    count: int | None
    method: str | None
    body: str | None
    after: bool = False  # handle the request for real, then answer the fault instead


@dataclass
class _Task:
    polls_left: int
    status: str  # the final status: SUCCESS or FAILURE
    result: Any
    polled: int = 0


@dataclass
class _Body:
    fields: dict[str, str] = field(default_factory=dict)
    json: Any = None
    json_error: str | None = None


_BODY = web.RequestKey("wisphub_sandbox_body", _Body)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _public(value: Any) -> Any:
    """Drop sandbox-only keys (``_ping`` ...) at every level: they are never served."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _merge(target: Record, patch: Record) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


async def _read_body(request: web.Request) -> _Body:
    """Parse the body once; multipart must go through ``post()`` (its stream is read once)."""
    body = _Body()
    if not request.body_exists:
        return body
    ctype = request.content_type
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        for key, value in form.items():
            body.fields[key] = (
                value if isinstance(value, str) else str(getattr(value, "filename", ""))
            )
        return body
    raw = await request.read()
    if ctype == "application/json" or raw.lstrip()[:1] in (b"{", b"["):
        try:
            body.json = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            body.json_error = str(err)
            return body
        if isinstance(body.json, dict):
            body.fields = {str(k): _as_text(v) for k, v in body.json.items()}
    return body


class Sandbox:
    """A WispHub tenant in memory: its data, the requests it got, and the faults to inject."""

    def __init__(
        self,
        data: dict[str, list[dict[str, Any]]] | None = None,
        *,
        api_key: str = SANDBOX_API_KEY,
        ping_polls: int = 1,
    ) -> None:
        """Serve ``data`` (raw wire records by kind; kinds not given take the demo's)."""
        self.api_key = api_key
        self.ping_polls = ping_polls
        self.url = ""  # set by running_sandbox / serve once bound
        base = demo_data()
        for kind, records in (data or {}).items():
            if kind not in KINDS:
                msg = f"unknown sandbox data kind {kind!r} (expected one of {', '.join(KINDS)})"
                raise ValueError(msg)
            base[kind] = copy.deepcopy(records)
        self._initial: Data = base  # already a private copy; _load copies it again
        self.clients: list[Record] = []
        self.tickets: list[Record] = []
        self.invoices: list[Record] = []
        self.plans: list[Record] = []
        self.payment_methods: list[Record] = []
        self.promises: list[Record] = []
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._initial_faults: list[_Fault] = []
        self._tasks: dict[str, _Task] = {}
        self._load(base)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/"), self._api_root),
            ("GET", re.compile(r"/clientes/"), self._clients_list),
            ("GET", re.compile(r"/clientes/(?P<id>\d+)/"), self._client_detail),
            ("GET", re.compile(r"/clientes/(?P<id>\d+)/saldo/"), self._client_balance),
            ("POST", re.compile(r"/clientes/(?P<id>\d+)/ping/"), self._ping),
            ("GET", re.compile(r"/tasks/(?P<id>[^/]+)/"), self._task),
            ("GET", re.compile(r"/plan-internet/"), self._plans_list),
            ("GET", re.compile(r"/plan-internet/(?P<kind>pppoe|queue)/(?P<id>\d+)/"), self._plan),
            ("GET", re.compile(r"/tickets/"), self._tickets_list),
            ("POST", re.compile(r"/tickets/"), self._ticket_create),
            ("GET", re.compile(r"/tickets/asuntos-tickets/"), self._subjects),
            ("GET", re.compile(r"/tickets/(?P<id>\d+)/"), self._ticket_detail),
            ("GET", re.compile(r"/facturas/"), self._invoices_list),
            ("GET", re.compile(r"/formas-de-pago/"), self._payment_methods),
            ("POST", re.compile(r"/promesa-pago/"), self._promise),
        ]

    def _load(self, data: Data) -> None:
        # Mutate in place: callers may hold references to these lists.
        for kind in KINDS:
            getattr(self, kind)[:] = copy.deepcopy(data.get(kind, []))
        known = [FIRST_TICKET_ID - 1, *(int(t.get("id_ticket", 0)) for t in self.tickets)]
        self._next_ticket_id = max(known) + 1

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
            sandbox.add_fault(**_fault_kwargs(spec))
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
        self._faults.append(_Fault(re.compile(path), status, delay, count, method, body, after))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._faults.clear()

    def reset(self) -> None:
        """Back to the data (and fixture faults) this sandbox started with; the log is cleared."""
        self._load(self._initial)
        self._faults = list(self._initial_faults)
        self.requests.clear()
        self._tasks.clear()

    def _take_fault(self, path: str, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method not in (None, method) or not fault.pattern.search(path):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    def _client(self, sid: str | int) -> Record | None:
        return next((c for c in self.clients if str(c.get("id_servicio")) == str(sid)), None)

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
            return _html(SITE_HTML)
        rel = path[len("/api") :]
        body = await _read_body(request)
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
                return _fault_response(fault)
            if fault.status:
                return _fault_response(fault)
        return await self._route(request, rel, body)

    async def _route(self, request: web.Request, rel: str, body: _Body) -> web.StreamResponse:
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
                return _json(FORBIDDEN, 403)
            request[_BODY] = body
            return await handler(request, match)
        if allowed:
            if not self._authorized(request):
                return _json(FORBIDDEN, 403)
            return _json({"detail": f'Método "{request.method}" no permitido.'}, 405)
        return _html(NOT_FOUND_HTML, 404)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expected = f"Api-Key {self.api_key}"
        return hmac.compare_digest(header.encode(), expected.encode())

    def _page(self, request: web.Request, records: list[Record]) -> web.Response:
        """DRF LimitOffsetPagination, with absolute ``http://`` links as the real one builds."""
        limit = _int(request.query.get("limit"), DEFAULT_LIMIT, minimum=1)
        offset = _int(request.query.get("offset"), 0, minimum=0)
        count = len(records)
        base = f"http://{request.host}{request.path}"
        params = dict(request.query)

        def link(new_offset: int) -> str:
            query = {**params, "limit": str(limit), "offset": str(new_offset)}
            if new_offset <= 0:
                query.pop("offset")
            return f"{base}?{urlencode(query)}"

        return _json(
            {
                "count": count,
                "next": link(offset + limit) if offset + limit < count else None,
                "previous": link(max(offset - limit, 0)) if offset > 0 else None,
                "results": _public(records[offset : offset + limit]),
            }
        )

    # -- API handlers ---------------------------------------------------------------------------

    async def _api_root(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        root = f"http://{request.host}/api"
        names = ("clientes", "tickets", "facturas", "plan-internet", "formas-de-pago")
        return _json({name: f"{root}/{name}/" for name in names})

    async def _clients_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        q = request.query
        records = self.clients
        # Only these filters exist; anything else is silently ignored (the real API's trap).
        if "cedula" in q:
            records = [c for c in records if str(c.get("cedula", "")) == q["cedula"]]
        if "id_servicio" in q:
            if not q["id_servicio"].strip().isdigit():
                return _json({"id_servicio": ["Introduzca un número."]}, 400)
            wanted = int(q["id_servicio"])
            records = [c for c in records if c.get("id_servicio") == wanted]
        if "usuario" in q:
            records = [c for c in records if c.get("usuario") == q["usuario"]]
        if "nombre" in q:
            needle = q["nombre"].casefold()
            records = [c for c in records if needle in str(c.get("nombre", "")).casefold()]
        if "telefono__contains" in q:
            part = q["telefono__contains"]
            records = [c for c in records if part in str(c.get("telefono", ""))]
        if "estado" in q:
            label = CLIENT_STATES.get(q["estado"])
            if label is None:
                return _json({"estado": [_bad_choice(q["estado"])]}, 400)
            records = [c for c in records if c.get("estado") == label]
        return self._page(request, records)

    async def _client_detail(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return _json(NOT_FOUND, 404)
        # The detail serializer is poorer than the list's: no phone, balance or cut-off date.
        poorer = {k: v for k, v in client.items() if k not in {"telefono", "saldo", "fecha_corte"}}
        return _json(_public(poorer))

    async def _client_balance(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return _json(NOT_FOUND, 404)
        pending = [
            inv
            for inv in self.invoices
            if _owner(inv) == client.get("usuario") and inv.get("estado") == INVOICE_STATES["1"]
        ]
        return _json(
            {
                "nombre": client.get("nombre", ""),
                "saldo": client.get("saldo", "0.00"),
                "facturas": _public(pending),
            }
        )

    async def _ping(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return _json(NOT_FOUND, 404)
        body = request[_BODY]
        raw = body.fields.get("pings", "4")
        if not raw.isdigit() or not 1 <= int(raw) <= 20:
            return _json(
                {"pings": ["Asegúrese de que este valor sea un entero entre 1 y 20."]}, 400
            )
        status, result = _ping_outcome(client, int(raw))
        task_id = str(uuid.uuid4())
        self._tasks[task_id] = _Task(polls_left=self.ping_polls, status=status, result=result)
        return _json({"task_id": task_id}, 202)

    async def _task(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        task = self._tasks.get(m["id"])
        if task is None:
            return _json(NOT_FOUND, 404)
        task.polled += 1
        if task.polls_left > 0:
            task.polls_left -= 1
            # Celery says PENDING until a worker takes the task, then PROCESS while it runs.
            state = "PENDING" if task.polled == 1 else "PROCESS"
            return _json({"task": {"status": state, "result": None}})
        return _json({"task": {"status": task.status, "result": task.result}})

    async def _plans_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        summary = [{k: p.get(k) for k in ("id", "nombre", "tipo")} for p in self.plans]
        return self._page(request, summary)

    async def _plan(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        plan = next((p for p in self.plans if str(p.get("id")) == m["id"]), None)
        kind = "pppoe" if plan is not None and plan.get("tipo") == "PPPOE" else "queue"
        # WispHub has no detail for PCQ (queue-tree) plans: their price is not in the API.
        if plan is None or kind != m["kind"] or plan.get("tipo") == "PCQ":
            return _json(NOT_FOUND, 404)
        keys = ("nombre", "precio", "bajada", "subida", "descripcion")
        return _json({k: plan.get(k) for k in keys})

    async def _tickets_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        records = self.tickets
        if "estado" in request.query:
            label = TICKET_STATES.get(request.query["estado"])
            if label is None:
                return _json({"estado": [_bad_choice(request.query["estado"])]}, 400)
            labels = {label, *TICKET_STATE_ALIASES.get(label, ())}
            records = [t for t in records if t.get("estado") in labels]
        return self._page(request, records)

    async def _ticket_detail(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        ticket = next((t for t in self.tickets if str(t.get("id_ticket")) == m["id"]), None)
        if ticket is None:
            return _json(NOT_FOUND, 404)
        return _json(_public(ticket))

    async def _ticket_create(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        ctype = request.content_type
        if ctype == "application/json":
            # The real view reads request.POST and crashes on a JSON body: an opaque 500.
            return _html(SERVER_ERROR_HTML, 500)
        if ctype != "multipart/form-data":
            detail = f'Tipo de medio "{ctype}" incompatible en la solicitud.'
            return _json({"detail": detail}, 415)
        form = request[_BODY].fields
        errors: dict[str, list[str]] = {}
        required = (
            "servicio",
            "asunto",
            "descripcion",
            "estado",
            "prioridad",
            "tecnico",
            "departamento",
        )
        for name in required:
            if name not in form:
                errors[name] = [REQUIRED]
            elif not form[name].strip():
                errors[name] = [BLANK]
        client = None
        if "servicio" not in errors:
            sid = form["servicio"].strip()
            client = self._client(sid) if sid.isdigit() else None
            if client is None:
                errors["servicio"] = [f'Clave primaria "{sid}" inválida - objeto no existe.']
        for name, choices in (("estado", TICKET_STATES), ("prioridad", TICKET_PRIORITIES)):
            if name not in errors and form[name].strip() not in choices:
                errors[name] = [_bad_choice(form[name])]
        subject = form.get("asuntos_default") or form.get("asunto", "")
        if "asunto" not in errors and subject not in SUBJECTS:
            # The subject must come from the tenant's catalogue (/tickets/asuntos-tickets/).
            errors["asuntos_default"] = [_bad_choice(subject)]
        if "tecnico" not in errors and not form["tecnico"].strip().isdigit():
            errors["tecnico"] = ["Tipo incorrecto. Esperado valor de clave primaria y recibió str."]
        for name in ("fecha_inicio", "fecha_final"):
            if form.get(name) and not _valid_datetime(form[name]):
                errors[name] = ["Formato de fecha inválido. Use DD/MM/YYYY HH:MM."]
        if errors or client is None:
            return _json(errors, 400)
        tech_id = int(form["tecnico"])
        tech = next((t for t in TECHNICIANS if t["id"] == tech_id), {"id": tech_id, "nombre": ""})
        ticket: Record = {
            "id_ticket": self._next_ticket_id,
            "asunto": form["asunto"],
            "asuntos_default": form.get("asuntos_default") or form["asunto"],
            "descripcion": form["descripcion"],
            "estado": TICKET_STATES[form["estado"].strip()],
            # The real answer echoes the priority code, and has no ``fecha_creacion``: only the
            # planned window (``fecha_estimada_inicio``/``fin``) says when the ticket is from.
            "prioridad": form["prioridad"].strip(),
            "departamento": form["departamento"],
            "departamentos_default": form.get("departamentos_default") or form["departamento"],
            "tecnico": dict(tech),
            "email_tecnico": form.get("email_tecnico", ""),
            "origen_reporte": form.get("origen_reporte", ""),
            "fecha_estimada_inicio": _planned(form.get("fecha_inicio"), hours=0),
            "fecha_estimada_fin": _planned(form.get("fecha_final"), hours=48),
            "archivo_ticket": form.get("archivo_ticket") or None,
            "servicio": {
                "id_servicio": client["id_servicio"],
                "usuario": client.get("usuario", ""),
                "nombre": client.get("nombre", ""),
                "direccion": client.get("direccion", ""),
            },
        }
        self._next_ticket_id += 1
        self.tickets.append(ticket)
        return _json(_public(ticket), 201)

    async def _subjects(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        subjects = [{"id": i, "nombre": s} for i, s in enumerate(SUBJECTS, start=1)]
        return self._page(request, subjects)

    async def _invoices_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        q = request.query
        records = self.invoices
        if "cliente" in q:
            records = [inv for inv in records if _owner(inv) == q["cliente"]]
        if "estado" in q:
            label = INVOICE_STATES.get(q["estado"])
            if label is None:
                return _json({"estado": [_bad_choice(q["estado"])]}, 400)
            records = [inv for inv in records if inv.get("estado") == label]
        return self._page(request, records)

    async def _payment_methods(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        return self._page(request, self.payment_methods)

    async def _promise(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        body = request[_BODY]
        if body.json_error is not None:
            return _json({"detail": f"JSON parse error - {body.json_error}"}, 400)
        form = body.fields
        errors: dict[str, list[str]] = {}
        invoice_id = form.get("id_factura", "").strip()
        if not invoice_id:
            errors["id_factura"] = [REQUIRED]
        elif not invoice_id.isdigit():
            errors["id_factura"] = ["Se requiere un número entero válido."]
        deadline = form.get("fecha_limite", "").strip()
        if not deadline:
            errors["fecha_limite"] = [REQUIRED]
        elif not _valid_date(deadline):
            errors["fecha_limite"] = [
                "Fecha con formato erróneo. Use uno de los siguientes formatos en su lugar: "
                "YYYY-MM-DD."
            ]
        if errors:
            return _json(errors, 400)
        # The real server does not check that the invoice exists: neither do we.
        self.promises.append(
            {
                "id_factura": int(invoice_id),
                "fecha_limite": deadline,
                "accion": form.get("accion", ""),
                "registrada": datetime.now(BOGOTA).replace(microsecond=0).isoformat(),
            }
        )
        return _json({"mensaje": "Promesa de pago registrada correctamente."})

    # -- control endpoints ----------------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.StreamResponse:
        action = (request.method, request.path.rstrip("/"))
        try:
            if action == ("POST", "/_sandbox/faults"):
                specs = await request.json()
                for spec in specs if isinstance(specs, list) else [specs]:
                    self.add_fault(**_fault_kwargs(spec))
                return _json({"faults": len(self._faults)}, 201)
            if action == ("DELETE", "/_sandbox/faults"):
                self.clear_faults()
                return _json({"faults": 0})
            if action == ("GET", "/_sandbox/requests"):
                return _json([asdict(r) for r in self.requests])
            if action == ("POST", "/_sandbox/reset"):
                self.reset()
                return _json({"reset": True})
            if action == ("POST", "/_sandbox/clients"):
                patches = await request.json()
                changed = []
                for patch in patches if isinstance(patches, list) else [patches]:
                    client = self._client(patch.get("id_servicio", ""))
                    if client is None:
                        return _json(NOT_FOUND, 404)
                    _merge(client, {k: v for k, v in patch.items() if k != "id_servicio"})
                    changed.append(client["id_servicio"])
                return _json({"updated": changed})
            if action == ("GET", "/_sandbox/state"):
                state = {k: len(getattr(self, k)) for k in KINDS}
                return _json({**state, "promises_list": self.promises})
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError, re.error) as err:
            return _json({"detail": f"bad control request: {err}"}, 400)
        return _json({"detail": "unknown control endpoint"}, 404)


def _records(fixture: dict[str, Any], kind: str) -> list[Record]:
    value = fixture.get(kind) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        msg = f"wisphub fixture {kind!r} must be a list of mappings"
        raise ValueError(msg)
    return [dict(v) for v in value]


def _fault_kwargs(spec: Any) -> dict[str, Any]:
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


def _fault_response(fault: _Fault) -> web.Response:
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
        return _html(SERVER_ERROR_HTML, 500)
    if fault.status >= 500:
        # 502/503/504 come from the reverse proxy in front of WispHub.
        reasons = {
            502: "502 Bad Gateway",
            503: "503 Service Temporarily Unavailable",
            504: "504 Gateway Time-out",
        }
        label = reasons.get(fault.status, f"{fault.status} Error")
        return _html(_PROXY_HTML.format(status=label), fault.status)
    if fault.status == 403:
        return _json(FORBIDDEN, 403)
    if fault.status == 404:
        return _json(NOT_FOUND, 404)
    if fault.status == 429:
        return _json({"detail": "Solicitud fue regulada (throttled)."}, 429)
    return _json({"detail": f"Error {fault.status}."}, fault.status)


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


def _ping_outcome(client: Record, pings: int) -> tuple[str, Any]:
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


def _owner(invoice: Record) -> str:
    owner = invoice.get("cliente")
    if isinstance(owner, dict):
        return str(owner.get("usuario", ""))
    return str(owner or "")


def _bad_choice(value: str) -> str:
    return f"Escoja una opción válida. {value} no es una de las opciones disponibles."


def _int(raw: str | None, default: int, *, minimum: int) -> int:
    # DRF falls back to the default on a malformed limit/offset rather than failing.
    if raw is None or not raw.strip().isdigit():
        return default
    return max(int(raw), minimum)


def _valid_date(text: str) -> bool:
    # Strictly YYYY-MM-DD, as DRF's DateField parses it (fromisoformat alone accepts more).
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _planned(given: str | None, *, hours: int) -> str:
    """A ticket's planned start or end as WispHub lists it (``YYYY-MM-DD HH:MM``)."""
    if given and _valid_datetime(given):
        moment = datetime.strptime(given.strip(), "%d/%m/%Y %H:%M")
    else:
        moment = datetime.now(BOGOTA).replace(tzinfo=None) + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%d %H:%M")


def _valid_datetime(text: str) -> bool:
    try:
        datetime.strptime(text.strip(), "%d/%m/%Y %H:%M")
    except ValueError:
        return False
    return True


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
