"""Typed WispHub records. Spanish wire names map to English attributes through aliases.

Only allow-listed fields are declared and unknown fields are ignored, so the record's passwords
(``password_servicio``, ``password_cpe``, ``password_router_wifi``, ``password_ssid_router_wifi``)
and ``coordenadas`` are never parsed, stored, logged or returned.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

logger = logging.getLogger(__name__)

SECRET_FIELDS = frozenset(
    {
        "password_servicio",
        "password_cpe",
        "password_router_wifi",
        "password_ssid_router_wifi",
        "coordenadas",
    }
)


# What real WispHub exports put in an empty field besides null and "": Python's str(None).
_ABSENT = frozenset({"", "none", "null"})


def absent(v: Any) -> bool:
    """Null, empty, or a literal ``"None"``/``"null"`` string (seen in real WispHub records)."""
    return v is None or (isinstance(v, str) and v.strip().lower() in _ABSENT)


def _lenient(v: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """An optional field that cannot be read is absent, never the reason to drop the record."""
    if absent(v):
        return None
    try:
        return handler(v)
    except (ValidationError, ValueError, TypeError):
        # Only the field's name: its value may be personal data.
        logger.debug("unreadable optional field left empty", extra={"field": info.field_name})
        return None


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def to_decimal(v: Any) -> Decimal:
    """Read WispHub money: ``"40000.00"``, ``40000``, ``"40.000,00"``, null or "None" → 0."""
    if absent(v):
        return Decimal(0)
    if isinstance(v, (int, float, Decimal)):
        return Decimal(str(v))
    text = str(v).strip().replace("$", "").replace(" ", "")
    if "," in text and "." in text and text.rfind(",") > text.rfind("."):
        text = text.replace(".", "").replace(",", ".")
    elif "," in text:
        text = (
            text.replace(",", ".")
            if re.fullmatch(r"-?\d+,\d{1,2}", text)
            else text.replace(",", "")
        )
    try:
        return Decimal(text)
    except InvalidOperation as err:
        raise ValueError(f"not an amount: {v!r}") from err


def to_date(v: Any) -> date | None:
    """Read WispHub dates: ``"6/08/2026"``, ``"27/07/2026 12:30:00"``, ISO; empty → None."""
    if absent(v):
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    text = str(v).strip()
    m = re.match(r"^(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if m:
        return date(int(m[3]), int(m[2]), int(m[1]))
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})", text)
    if m:
        return date(int(m[1]), int(m[2]), int(m[3]))
    raise ValueError(f"not a date: {v!r}")


def to_datetime(v: Any) -> datetime | None:
    """Read ISO timestamps (with offset) or ``DD/MM/YYYY HH:MM[:SS]``; empty → None."""
    if absent(v):
        return None
    if isinstance(v, datetime):
        return v
    text = str(v).strip()
    m = re.match(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$", text)
    if m:
        return datetime(
            int(m[3]), int(m[2]), int(m[1]), int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
        )
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"not a timestamp: {v!r}") from err


class Ref(_Record):
    """A nested ``{id, nombre}`` reference (plan, zone, technician)."""

    id: int | None = None
    name: str = Field(default="", alias="nombre")

    @field_validator("name", mode="before")
    @classmethod
    def _none_empty(cls, v: Any) -> Any:
        return "" if v is None else v


class Router(_Record):
    """The client's access router, which carries the zone's known-outage flag."""

    id: int | None = None
    name: str = Field(default="", alias="nombre")
    outage: bool = Field(default=False, alias="falla_general")
    outage_description: str = Field(default="", alias="falla_general_descripcion")

    @field_validator("name", "outage_description", mode="before")
    @classmethod
    def _none_empty(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("outage", mode="before")
    @classmethod
    def _flag(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v.strip().lower() in {"true", "1", "si", "sí", "yes"}
        return bool(v)


class Client(_Record):
    """A client's service record, from the ``/clientes/`` list endpoint (allow-listed fields)."""

    service_id: int = Field(alias="id_servicio")
    username: str = Field(default="", alias="usuario")
    name: str = Field(default="", alias="nombre")
    email: str = ""
    document: str = Field(default="", alias="cedula")
    address: str = Field(default="", alias="direccion")
    locality: str = Field(default="", alias="localidad")
    city: str = Field(default="", alias="ciudad")
    phones: tuple[str, ...] = Field(default=(), alias="telefono")
    balance: Decimal = Field(default=Decimal(0), alias="saldo")
    plan_price: Decimal = Field(default=Decimal(0), alias="precio_plan")
    status: str = Field(default="", alias="estado")
    invoice_status: str = Field(default="", alias="estado_facturas")
    cutoff_date: date | None = Field(default=None, alias="fecha_corte")
    installed_at: datetime | None = Field(default=None, alias="fecha_instalacion")
    ip: str = ""
    plan: Ref | None = Field(default=None, alias="plan_internet")
    zone: Ref | None = Field(default=None, alias="zona")
    router: Router | None = None
    technician: Ref | None = Field(default=None, alias="tecnico")

    @field_validator(
        "username",
        "name",
        "email",
        "document",
        "address",
        "locality",
        "city",
        "status",
        "invoice_status",
        "ip",
        mode="before",
    )
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if absent(v) else str(v).strip()

    @field_validator("phones", mode="before")
    @classmethod
    def _phones(cls, v: Any) -> tuple[str, ...]:
        if v is None:
            return ()
        items = v if isinstance(v, (list, tuple)) else re.split(r"[,;/]", str(v))
        return tuple(p for p in (re.sub(r"\D", "", str(i)) for i in items) if p)

    @field_validator("balance", "plan_price", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal:
        return to_decimal(v)

    @field_validator("cutoff_date", mode="before")
    @classmethod
    def _date(cls, v: Any) -> date | None:
        return to_date(v)

    @field_validator("installed_at", mode="before")
    @classmethod
    def _dt(cls, v: Any) -> datetime | None:
        return to_datetime(v)

    # Defined last so it wraps the readers above (pydantic runs later wrappers first).
    _optional = field_validator(
        "cutoff_date", "installed_at", "plan", "zone", "router", "technician", mode="wrap"
    )(_lenient)

    @property
    def first_name(self) -> str:
        """The first word of the holder's name, for greetings."""
        return self.name.split()[0].title() if self.name.split() else ""

    @property
    def has_outage(self) -> bool:
        """The client's router reports a known mass outage."""
        return self.router is not None and self.router.outage

    @property
    def suspended(self) -> bool:
        """The service is suspended (usually for debt)."""
        return self.status.lower().startswith("suspend")

    def __repr__(self) -> str:
        # Personal data stays out of reprs (and so out of tracebacks and logs).
        return f"Client(service_id={self.service_id})"

    __str__ = __repr__


class TicketService(_Record):
    """The ``servicio`` object nested in a ticket."""

    service_id: int | None = Field(default=None, alias="id_servicio")


class Ticket(_Record):
    """A support ticket."""

    id: int = Field(alias="id_ticket")
    subject: str = Field(default="", alias="asunto")
    description: str = Field(default="", alias="descripcion")
    status: str = Field(default="", alias="estado")
    priority: str = Field(default="", alias="prioridad")
    department: str = Field(default="", alias="departamento")
    created_at: datetime | None = Field(default=None, alias="fecha_creacion")
    # Real ticket items often carry only the planned window, not ``fecha_creacion``.
    starts_at: datetime | None = Field(default=None, alias="fecha_estimada_inicio")
    ends_at: datetime | None = Field(default=None, alias="fecha_estimada_fin")
    service: TicketService | None = Field(default=None, alias="servicio")

    @field_validator("subject", "description", "status", "priority", "department", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, dict):  # some tenants nest {id, nombre}
            v = v.get("nombre", "")
        return "" if absent(v) else str(v).strip()

    @field_validator("service", mode="before")
    @classmethod
    def _service(cls, v: Any) -> Any:
        if isinstance(v, (int, str)) and str(v).isdigit():
            return {"id_servicio": int(v)}
        return v

    @field_validator("created_at", "starts_at", "ends_at", mode="before")
    @classmethod
    def _dt(cls, v: Any) -> datetime | None:
        return to_datetime(v)

    _optional = field_validator("created_at", "starts_at", "ends_at", "service", mode="wrap")(
        _lenient
    )

    @property
    def opened_at(self) -> datetime | None:
        """When the ticket was opened: ``fecha_creacion``, else its planned start."""
        return self.created_at or self.starts_at

    @property
    def service_id(self) -> int | None:
        """The service this ticket belongs to."""
        return self.service.service_id if self.service else None

    @property
    def is_open(self) -> bool:
        """Not resolved or closed."""
        return self.status.lower() not in {"resuelto", "cerrado", "3", "4"}


class InvoiceClient(_Record):
    """The ``cliente`` object nested in an invoice."""

    username: str = Field(default="", alias="usuario")


class Invoice(_Record):
    """An invoice."""

    id: int = Field(alias="id_factura")
    total: Decimal = Decimal(0)
    status: str = Field(default="", alias="estado")
    due_date: date | None = Field(default=None, alias="fecha_vencimiento")
    issued_on: date | None = Field(default=None, alias="fecha_emision")
    client: InvoiceClient | None = Field(default=None, alias="cliente")

    @field_validator("total", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal:
        return to_decimal(v)

    @field_validator("due_date", "issued_on", mode="before")
    @classmethod
    def _date(cls, v: Any) -> date | None:
        return to_date(v)

    _optional = field_validator("due_date", "issued_on", "client", mode="wrap")(_lenient)

    @field_validator("status", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else str(v)


class Plan(_Record):
    """An internet plan with its price (merged from the list and the pppoe/queue detail)."""

    id: int
    name: str = Field(default="", alias="nombre")
    kind: str = Field(default="", alias="tipo")
    price: Decimal | None = Field(default=None, alias="precio")
    download: str = Field(default="", alias="bajada")
    upload: str = Field(default="", alias="subida")
    description: str = Field(default="", alias="descripcion")

    @field_validator("price", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal | None:
        return None if absent(v) else to_decimal(v)

    @field_validator("name", "kind", "download", "upload", "description", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if absent(v) else str(v)

    _optional = field_validator("price", mode="wrap")(_lenient)


class PaymentMethod(_Record):
    """A way to pay (``/formas-de-pago/``)."""

    id: int
    name: str = Field(default="", alias="nombre")


class PingResult(BaseModel):
    """What the connection check found."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "no_response", "partial", "unknown"]
    sent: int = 0
    received: int = 0
    avg_rtt_ms: float | None = None


class TicketRequest(BaseModel):
    """What the bot needs to file one ticket; the client turns it into WispHub's multipart form."""

    model_config = ConfigDict(frozen=True)

    service_id: int
    subject: str
    description: str
    priority: Literal["1", "2", "3", "4"] = "2"
    technician_id: int | None = None
    department: str = "Soporte Técnico"
    origin: str = "redes_sociales"
    # When the customer asked: lets a timed-out POST be reconciled by looking for the ticket.
    requested_at: datetime
    # An earlier attempt's outcome is unknown: look for that ticket before posting again.
    recheck: bool = False


__all__ = [
    "SECRET_FIELDS",
    "Client",
    "Invoice",
    "PaymentMethod",
    "PingResult",
    "Plan",
    "Ref",
    "Router",
    "Ticket",
    "TicketRequest",
]
