"""How WispHub speaks over HTTP (Django REST Framework's shapes), for the sandbox's handlers.

JSON and HTML answers, DRF's limit/offset pages with absolute ``http://`` links, its field
errors and choice messages, and the request body read once (multipart, urlencoded or JSON).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from integrations.wisphub.sandbox.demo_data import Record

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


@dataclass
class Body:
    """A request body read once: form fields (or a flat JSON object's values as text)."""

    fields: dict[str, str] = field(default_factory=dict)
    json: Any = None
    json_error: str | None = None


BODY = web.RequestKey("wisphub_sandbox_body", Body)


def as_json(data: Any, status: int = 200) -> web.Response:
    """A JSON answer, non-ASCII kept as is (as Django sends it)."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def as_html(text: str, status: int = 200) -> web.Response:
    """An HTML page."""
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def public(value: Any) -> Any:
    """Drop sandbox-only keys (``_ping`` ...) at every level: they are never served."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


async def read_body(request: web.Request) -> Body:
    """Parse the body once; multipart must go through ``post()`` (its stream is read once)."""
    body = Body()
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
            body.fields = {str(k): as_text(v) for k, v in body.json.items()}
    return body


def page(request: web.Request, records: list[Record]) -> web.Response:
    """DRF LimitOffsetPagination, with absolute ``http://`` links as the real one builds."""
    limit = int_param(request.query.get("limit"), DEFAULT_LIMIT, minimum=1)
    offset = int_param(request.query.get("offset"), 0, minimum=0)
    count = len(records)
    base = f"http://{request.host}{request.path}"
    params = dict(request.query)

    def link(new_offset: int) -> str:
        query = {**params, "limit": str(limit), "offset": str(new_offset)}
        if new_offset <= 0:
            query.pop("offset")
        return f"{base}?{urlencode(query)}"

    return as_json(
        {
            "count": count,
            "next": link(offset + limit) if offset + limit < count else None,
            "previous": link(max(offset - limit, 0)) if offset > 0 else None,
            "results": public(records[offset : offset + limit]),
        }
    )


def bad_choice(value: str) -> str:
    return f"Escoja una opción válida. {value} no es una de las opciones disponibles."


def int_param(raw: str | None, default: int, *, minimum: int) -> int:
    # DRF falls back to the default on a malformed limit/offset rather than failing.
    if raw is None or not raw.strip().isdigit():
        return default
    return max(int(raw), minimum)


def valid_date(text: str) -> bool:
    # Strictly YYYY-MM-DD, as DRF's DateField parses it (fromisoformat alone accepts more).
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def planned(given: str | None, *, hours: int) -> str:
    """A ticket's planned start or end as WispHub lists it (``YYYY-MM-DD HH:MM``)."""
    if given and valid_datetime(given):
        moment = datetime.strptime(given.strip(), "%d/%m/%Y %H:%M")
    else:
        moment = datetime.now(BOGOTA).replace(tzinfo=None) + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%d %H:%M")


def valid_datetime(text: str) -> bool:
    try:
        datetime.strptime(text.strip(), "%d/%m/%Y %H:%M")
    except ValueError:
        return False
    return True
