"""The sandbox's API endpoints: a WispHub tenant's clients, plans, tickets, invoices and pings.

Each handler answers as the real endpoint does (filters it knows, the rest silently ignored;
DRF's validation messages; the list serializer richer than the detail one).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from integrations.wisphub.sandbox.demo_data import (
    CLIENT_STATES,
    INVOICE_STATES,
    SUBJECTS,
    TECHNICIANS,
    TICKET_PRIORITIES,
    TICKET_STATE_ALIASES,
    TICKET_STATES,
    Record,
)
from integrations.wisphub.sandbox.ping import PingTask, ping_outcome
from integrations.wisphub.sandbox.wire import (
    BLANK,
    BODY,
    BOGOTA,
    NOT_FOUND,
    REQUIRED,
    SERVER_ERROR_HTML,
    as_html,
    as_json,
    bad_choice,
    page,
    planned,
    public,
    valid_date,
    valid_datetime,
)

Handler = Callable[[web.Request, re.Match[str]], Awaitable[web.StreamResponse]]


class TenantApi:
    """A WispHub tenant's records and the API handlers that serve them."""

    def __init__(self, *, ping_polls: int = 1) -> None:
        self.ping_polls = ping_polls
        self.clients: list[Record] = []
        self.tickets: list[Record] = []
        self.invoices: list[Record] = []
        self.plans: list[Record] = []
        self.payment_methods: list[Record] = []
        self.promises: list[Record] = []
        self._tasks: dict[str, PingTask] = {}
        self._next_ticket_id = 0
        # Documents → records, for ``?cedula=`` (a look-up per conversation: a scan of a big
        # tenant costs more than the request around it). Built again when the list is another
        # object or has grown or shrunk, and by every change the sandbox makes itself (a reset,
        # a patch); a record replaced or its document edited from outside needs ``reindex()``.
        self._by_document: dict[str, list[Record]] = {}
        self._indexed: tuple[list[Record] | None, int] = (None, -1)  # the list itself, held
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

    def reindex(self) -> None:
        """Index the clients by document again (after editing a record's ``cedula``)."""
        index: dict[str, list[Record]] = {}
        for client in self.clients:
            index.setdefault(str(client.get("cedula", "")), []).append(client)
        self._by_document = index
        self._indexed = (self.clients, len(self.clients))

    def _with_document(self, document: str) -> list[Record]:
        indexed, size = self._indexed
        if indexed is not self.clients or size != len(self.clients):
            self.reindex()
        return self._by_document.get(document, [])

    def _client(self, sid: str | int) -> Record | None:
        return next((c for c in self.clients if str(c.get("id_servicio")) == str(sid)), None)

    # -- API handlers ---------------------------------------------------------------------------

    async def _api_root(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        root = f"http://{request.host}/api"
        names = ("clientes", "tickets", "facturas", "plan-internet", "formas-de-pago")
        return as_json({name: f"{root}/{name}/" for name in names})

    async def _clients_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        q = request.query
        records = self.clients
        # Only these filters exist; anything else is silently ignored (the real API's trap).
        if "cedula" in q:
            records = self._with_document(q["cedula"])
        if "id_servicio" in q:
            if not q["id_servicio"].strip().isdigit():
                return as_json({"id_servicio": ["Introduzca un número."]}, 400)
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
                return as_json({"estado": [bad_choice(q["estado"])]}, 400)
            records = [c for c in records if c.get("estado") == label]
        return page(request, records)

    async def _client_detail(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return as_json(NOT_FOUND, 404)
        # The detail serializer is poorer than the list's: no phone, balance or cut-off date.
        poorer = {k: v for k, v in client.items() if k not in {"telefono", "saldo", "fecha_corte"}}
        return as_json(public(poorer))

    async def _client_balance(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return as_json(NOT_FOUND, 404)
        pending = [
            inv
            for inv in self.invoices
            if owner(inv) == client.get("usuario") and inv.get("estado") == INVOICE_STATES["1"]
        ]
        return as_json(
            {
                "nombre": client.get("nombre", ""),
                "saldo": client.get("saldo", "0.00"),
                "facturas": public(pending),
            }
        )

    async def _ping(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        client = self._client(m["id"])
        if client is None:
            return as_json(NOT_FOUND, 404)
        body = request[BODY]
        raw = body.fields.get("pings", "4")
        if not raw.isdigit() or not 1 <= int(raw) <= 20:
            return as_json(
                {"pings": ["Asegúrese de que este valor sea un entero entre 1 y 20."]}, 400
            )
        status, result = ping_outcome(client, int(raw))
        task_id = str(uuid.uuid4())
        self._tasks[task_id] = PingTask(polls_left=self.ping_polls, status=status, result=result)
        return as_json({"task_id": task_id}, 202)

    async def _task(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        task = self._tasks.get(m["id"])
        if task is None:
            return as_json(NOT_FOUND, 404)
        task.polled += 1
        if task.polls_left > 0:
            task.polls_left -= 1
            # Celery says PENDING until a worker takes the task, then PROCESS while it runs.
            state = "PENDING" if task.polled == 1 else "PROCESS"
            return as_json({"task": {"status": state, "result": None}})
        return as_json({"task": {"status": task.status, "result": task.result}})

    async def _plans_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        summary = [{k: p.get(k) for k in ("id", "nombre", "tipo")} for p in self.plans]
        return page(request, summary)

    async def _plan(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        plan = next((p for p in self.plans if str(p.get("id")) == m["id"]), None)
        kind = "pppoe" if plan is not None and plan.get("tipo") == "PPPOE" else "queue"
        # WispHub has no detail for PCQ (queue-tree) plans: their price is not in the API.
        if plan is None or kind != m["kind"] or plan.get("tipo") == "PCQ":
            return as_json(NOT_FOUND, 404)
        keys = ("nombre", "precio", "bajada", "subida", "descripcion")
        return as_json({k: plan.get(k) for k in keys})

    async def _tickets_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        records = self.tickets
        if "estado" in request.query:
            label = TICKET_STATES.get(request.query["estado"])
            if label is None:
                return as_json({"estado": [bad_choice(request.query["estado"])]}, 400)
            labels = {label, *TICKET_STATE_ALIASES.get(label, ())}
            records = [t for t in records if t.get("estado") in labels]
        return page(request, records)

    async def _ticket_detail(self, request: web.Request, m: re.Match[str]) -> web.StreamResponse:
        ticket = next((t for t in self.tickets if str(t.get("id_ticket")) == m["id"]), None)
        if ticket is None:
            return as_json(NOT_FOUND, 404)
        return as_json(public(ticket))

    async def _ticket_create(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        ctype = request.content_type
        if ctype == "application/json":
            # The real view reads request.POST and crashes on a JSON body: an opaque 500.
            return as_html(SERVER_ERROR_HTML, 500)
        if ctype != "multipart/form-data":
            detail = f'Tipo de medio "{ctype}" incompatible en la solicitud.'
            return as_json({"detail": detail}, 415)
        form = request[BODY].fields
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
                errors[name] = [bad_choice(form[name])]
        subject = form.get("asuntos_default") or form.get("asunto", "")
        if "asunto" not in errors and subject not in SUBJECTS:
            # The subject must come from the tenant's catalogue (/tickets/asuntos-tickets/).
            errors["asuntos_default"] = [bad_choice(subject)]
        if "tecnico" not in errors and not form["tecnico"].strip().isdigit():
            errors["tecnico"] = ["Tipo incorrecto. Esperado valor de clave primaria y recibió str."]
        for name in ("fecha_inicio", "fecha_final"):
            if form.get(name) and not valid_datetime(form[name]):
                errors[name] = ["Formato de fecha inválido. Use DD/MM/YYYY HH:MM."]
        if errors or client is None:
            return as_json(errors, 400)
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
            "fecha_estimada_inicio": planned(form.get("fecha_inicio"), hours=0),
            "fecha_estimada_fin": planned(form.get("fecha_final"), hours=48),
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
        return as_json(public(ticket), 201)

    async def _subjects(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        subjects = [{"id": i, "nombre": s} for i, s in enumerate(SUBJECTS, start=1)]
        return page(request, subjects)

    async def _invoices_list(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        q = request.query
        records = self.invoices
        if "cliente" in q:
            records = [inv for inv in records if owner(inv) == q["cliente"]]
        if "estado" in q:
            label = INVOICE_STATES.get(q["estado"])
            if label is None:
                return as_json({"estado": [bad_choice(q["estado"])]}, 400)
            records = [inv for inv in records if inv.get("estado") == label]
        return page(request, records)

    async def _payment_methods(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        return page(request, self.payment_methods)

    async def _promise(self, request: web.Request, _: re.Match[str]) -> web.StreamResponse:
        body = request[BODY]
        if body.json_error is not None:
            return as_json({"detail": f"JSON parse error - {body.json_error}"}, 400)
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
        elif not valid_date(deadline):
            errors["fecha_limite"] = [
                "Fecha con formato erróneo. Use uno de los siguientes formatos en su lugar: "
                "YYYY-MM-DD."
            ]
        if errors:
            return as_json(errors, 400)
        # The real server does not check that the invoice exists: neither do we.
        self.promises.append(
            {
                "id_factura": int(invoice_id),
                "fecha_limite": deadline,
                "accion": form.get("accion", ""),
                "registrada": datetime.now(BOGOTA).replace(microsecond=0).isoformat(),
            }
        )
        return as_json({"mensaje": "Promesa de pago registrada correctamente."})


def owner(invoice: Record) -> str:
    owner = invoice.get("cliente")
    if isinstance(owner, dict):
        return str(owner.get("usuario", ""))
    return str(owner or "")
