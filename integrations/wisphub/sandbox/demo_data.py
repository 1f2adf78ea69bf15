"""Demo data for the WispHub sandbox: "FibraNet Demo", a small Colombian fibre ISP in Bogotá.

Records are raw wire dicts shaped like the real WispHub's (Spanish field names, money as strings,
``D/MM/YYYY`` dates, the four password fields and ``coordenadas`` included) so that the client's
allow-list is really exercised. Keys starting with ``_`` are sandbox-only hints (``_ping``) and are
never served.

The named clients 10-16 are used by the flows, the scenarios and the README; the fillers are
generated from a fixed seed so every run sees the same data.
"""

from __future__ import annotations

import copy
import random
import re
import unicodedata
from functools import cache
from typing import Any

Record = dict[str, Any]
Data = dict[str, list[Record]]

ISP_SLUG = "fibranet"
CIUDAD = "Bogotá D.C."
FIRST_TICKET_ID = 4800  # new tickets are numbered from here (or after the highest existing one)

ZONES: dict[str, Record] = {
    "Centro": {"id": 1, "nombre": "Centro"},
    "Norte": {"id": 2, "nombre": "Norte"},
    "Sur": {"id": 3, "nombre": "Sur"},
    "Occidente": {"id": 4, "nombre": "Occidente"},
}
_LOCALIDADES = {
    "Centro": ("Teusaquillo", "Chapinero", "Santa Fe"),
    "Norte": ("Usaquén", "Suba"),
    "Sur": ("Kennedy", "Bosa", "Tunjuelito"),
    "Occidente": ("Engativá", "Fontibón"),
}
TECHNICIANS: list[Record] = [
    {"id": 7, "nombre": "Luis Fernando Gómez"},
    {"id": 8, "nombre": "Sandra Milena Torres"},
    {"id": 9, "nombre": "Wilmer Alexis Ruiz"},
]

PLANS: list[Record] = [
    {
        "id": 1,
        "nombre": "Hogar 50 Mbps",
        "tipo": "PPPOE",
        "precio": "89900.00",
        "bajada": "50M",
        "subida": "25M",
        "descripcion": "Fibra óptica para el hogar, router WiFi de doble banda incluido.",
    },
    {
        "id": 2,
        "nombre": "Hogar 100 Mbps",
        "tipo": "PPPOE",
        "precio": "119900.00",
        "bajada": "100M",
        "subida": "50M",
        "descripcion": "Fibra óptica para hogares con varios dispositivos y streaming en 4K.",
    },
    {
        "id": 3,
        "nombre": "Empresarial 200 Mbps",
        "tipo": "SIMPLE QUEUE",
        "precio": "249900.00",
        "bajada": "200M",
        "subida": "200M",
        "descripcion": "Canal simétrico con IP fija y soporte prioritario 24/7.",
    },
    {
        "id": 4,
        "nombre": "Básico 20 Mbps",
        "tipo": "PCQ",
        "precio": "59900.00",
        "bajada": "20M",
        "subida": "10M",
        "descripcion": "Plan de entrada para navegación, redes sociales y clases virtuales.",
    },
]

PAYMENT_METHODS: list[Record] = [
    {"id": 1, "nombre": "Efectivo"},
    {"id": 2, "nombre": "Transferencia Bancolombia"},
    {"id": 3, "nombre": "Nequi"},
    {"id": 4, "nombre": "PSE"},
]

TICKET_STATES = {"1": "Nuevo", "2": "En Progreso", "3": "Resuelto", "4": "Cerrado"}
# Other labels real tenants list under the same state code (the FastAPI wrapper's "Abierto").
TICKET_STATE_ALIASES = {"Nuevo": ("Abierto",)}
TICKET_PRIORITIES = {"1": "Baja", "2": "Normal", "3": "Alta", "4": "Muy Alta"}
INVOICE_STATES = {
    "1": "Pendiente de Pago",
    "2": "Pagada",
    "3": "Cancelada",
    "4": "En Revisión",
    "5": "Transferida",
}
CLIENT_STATES = {"1": "Activo", "2": "Suspendido", "3": "Cancelado", "4": "Gratis"}

# A tenant's subject catalogue (/tickets/asuntos-tickets/) as public WispHub integrations list
# it; a ticket whose subject is not here is refused. The first 17 (the values wisphub-api.md
# lists, by priority) are the ones the demo's tickets use.
SUBJECTS: list[str] = [
    "Cambio de Contraseña en Router Wifi",
    "Cambio de Domicilio",
    "Recolección De Equipos",
    "Cancelación",
    "Desconexión",
    "Internet Lento",
    "Internet Intermitente",
    "Antena Desalineada",
    "Cables Mal Colocados",
    "No Tiene Internet",
    "Antena Dañada",
    "No Responde la Antena",
    "No Responde el Router Wifi",
    "Reconexión",
    "Cable Fibra Dañado",
    "Troncal Dañado",
    "Caja Nap Dañada",
    "Cableado Para Modem Extra",
    "Router Wifi Reseteado (Valores de Fabrica)",
    "Cambio de Router Wifi",
    "Cambio de Antena",
    "Cable UTP Dañado",
    "Conector Dañado",
    "Jumper Dañado",
    "Cambio A Fibra Óptica",
    "Cambio de Plan",  # the bot's default plan-change subject (WISPHUB_SUBJECT_PLAN_CHANGE)
]

_DEFAULT_ROUTER: Record = {
    "id": 1,
    "nombre": "RB Centro",
    "falla_general": False,
    "falla_general_descripcion": "",
}
_ROUTERS = {
    "Centro": {"id": 1, "nombre": "RB Centro"},
    "Norte": {"id": 2, "nombre": "OLT Norte"},
    "Sur": {"id": 3, "nombre": "RB Sur"},
    "Occidente": {"id": 4, "nombre": "OLT Occidente"},
}
NORTH_OUTAGE = (
    "Corte de fibra en la troncal norte. Técnicos en sitio; "
    "restablecimiento estimado hoy a las 4:00 p. m."
)


def fold(text: str) -> str:
    """Lower-case ASCII letters only: the basis of ``usuario`` slugs."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", plain.lower())


def username_for(nombre: str, taken: set[str]) -> str:
    """Derive a WispHub-style ``usuario`` slug ("aruiz@fibranet") unique among ``taken``."""
    words = [w for w in nombre.split() if fold(w)]
    if not words:
        base = "cliente"
    elif len(words) == 1:
        base = fold(words[0])
    else:
        # Colombian names: with four words the first surname is the third; else the last word.
        surname = words[2] if len(words) >= 4 else words[-1]
        base = fold(words[0])[:1] + fold(surname)
    slug = f"{base}@{ISP_SLUG}"
    n = 2
    while slug in taken:
        slug = f"{base}{n}@{ISP_SLUG}"
        n += 1
    taken.add(slug)
    return slug


def money(value: Any) -> str:
    """Format an amount the way WispHub serialises it: ``"89900.00"``."""
    if value is None or value == "":
        return "0.00"
    text = str(value).strip()
    try:
        return f"{float(text):.2f}"
    except ValueError:
        return text


def _ref(value: Any, catalogue: list[Record] | None = None) -> Record:
    """Normalise a nested ``{id, nombre}`` given as a dict, a name or an id."""
    if isinstance(value, dict):
        return dict(value)
    for item in catalogue or []:
        if value in (item.get("id"), item.get("nombre")) or str(value) == str(item.get("id")):
            return {"id": item["id"], "nombre": item["nombre"]}
    if isinstance(value, int):
        return {"id": value, "nombre": ""}
    return {"id": None, "nombre": str(value)}


def complete_client(
    given: Record, *, taken: set[str], plans: list[Record] | None = None, index: int = 0
) -> Record:
    """Fill a (fixture) client with plain defaults for every field the real list endpoint has."""
    plans = PLANS if plans is None else plans
    sid = int(given.get("id_servicio", 1000 + index))
    nombre = str(given.get("nombre", f"Cliente {sid}"))
    plan = _ref(given.get("plan_internet", "Hogar 50 Mbps"), plans)
    plan_price = next((p.get("precio") for p in plans if p.get("id") == plan.get("id")), None)
    zone = _ref(given.get("zona", "Centro"), list(ZONES.values()))
    zone_router = _ROUTERS.get(str(zone.get("nombre")), {})
    router = {**_DEFAULT_ROUTER, **zone_router}
    if isinstance(given.get("router"), dict):
        router.update(given["router"])
    usuario = str(given["usuario"]) if given.get("usuario") else username_for(nombre, taken)
    taken.add(usuario)
    record: Record = {
        "id_servicio": sid,
        "usuario": usuario,
        "nombre": nombre,
        "email": "",
        "cedula": "",
        "direccion": "Calle 10 # 5-20",
        "localidad": _LOCALIDADES.get(str(zone.get("nombre")), ("",))[0],
        "ciudad": CIUDAD,
        "telefono": "",
        "saldo": "0.00",
        "precio_plan": money(plan_price or "89900.00"),
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "15/03/2025 10:00:00",
        "fecha_suspension": None,
        "fecha_cancelacion": None,
        "ip": f"10.20.{sid // 250 * 10 + (zone.get('id') or 1)}.{sid % 250 + 2}",
        "ip_local": "192.168.1.1",
        "mac_cpe": "",
        "interfaz_lan": "",
        "sn_onu": "",
        "ssid_router_wifi": f"FibraNet-{sid}",
        "modelo_router_wifi": "Huawei HG8145V5",
        "plan_internet": plan,
        "zona": zone,
        "router": router,
        "tecnico": dict(TECHNICIANS[0]),
        "comentarios": "",
        "forma_contratacion": "Mensual",
        "costo_instalacion": "0.00",
        "descuento": "0.00",
        "servicios_adicionales": [],
        "password_servicio": f"pppoe-{sid:05d}-Xk9",
        "password_cpe": f"cpe-{sid:05d}-Qm2",
        "password_router_wifi": f"admin-{sid:05d}-Zt7",
        "password_ssid_router_wifi": f"wifi-{sid:05d}-Lp4",
        "coordenadas": "4.6097100,-74.0817500",
    }
    for key, value in given.items():
        if key in {"plan_internet", "zona", "router", "usuario"}:
            continue
        record[key] = value
    record["id_servicio"] = sid
    for key in ("cedula", "telefono", "nombre"):
        record[key] = "" if record[key] is None else str(record[key])
    for key in ("saldo", "precio_plan"):
        record[key] = money(record[key])
    if str(record["estado"]) in CLIENT_STATES:
        record["estado"] = CLIENT_STATES[str(record["estado"])]
    return record


def _service_ref(sid: Any, clients: list[Record]) -> Record:
    client = next((c for c in clients if str(c.get("id_servicio")) == str(sid)), None)
    if client is None:
        return {"id_servicio": int(sid) if str(sid).isdigit() else sid}
    return {
        "id_servicio": client["id_servicio"],
        "usuario": client.get("usuario", ""),
        "nombre": client.get("nombre", ""),
        "direccion": client.get("direccion", ""),
    }


def complete_ticket(given: Record, *, clients: list[Record], index: int = 0) -> Record:
    """Fill a (fixture) ticket with defaults; a numeric estado becomes its label.

    Real ticket items often have no ``fecha_creacion``: only the planned window
    (``fecha_estimada_inicio``/``fecha_estimada_fin``, ``YYYY-MM-DD HH:MM``). A ticket given
    without ``fecha_creacion`` is served without one.
    """
    servicio = given.get("servicio", {})
    sid = servicio.get("id_servicio") if isinstance(servicio, dict) else servicio
    service = _service_ref(sid, clients) if sid is not None else {}
    if isinstance(servicio, dict):
        service.update({k: v for k, v in servicio.items() if k != "id_servicio"})
    created = str(given.get("fecha_creacion") or "")
    start = created[:16].replace("T", " ") if created else "2026-11-20 09:00"
    record: Record = {
        "id_ticket": 4700 + index,
        "asunto": "Internet Lento",
        "asuntos_default": "",
        "descripcion": "",
        "estado": "Nuevo",
        "prioridad": "Normal",
        "departamento": "Soporte Técnico",
        "departamentos_default": "Soporte Técnico",
        "tecnico": dict(TECHNICIANS[0]),
        "email_tecnico": "",
        "origen_reporte": "oficina",
        "fecha_estimada_inicio": start,
        "fecha_estimada_fin": "",
        "archivo_ticket": None,
    }
    record.update({k: v for k, v in given.items() if k != "servicio"})
    record["servicio"] = service
    record["id_ticket"] = int(record["id_ticket"])
    record["estado"] = TICKET_STATES.get(str(record["estado"]), record["estado"])
    # prioridad stays as given: real items carry the code ("2") or the label ("Normal").
    if not record["asuntos_default"]:
        record["asuntos_default"] = record["asunto"]
    return record


def complete_invoice(given: Record, *, clients: list[Record], index: int = 0) -> Record:
    """Fill a (fixture) invoice with defaults; ``cliente`` is completed from the clients."""
    cliente = given.get("cliente", {})
    if not isinstance(cliente, dict):
        cliente = {"usuario": str(cliente)}
    match = None
    if cliente.get("usuario"):
        match = next((c for c in clients if c.get("usuario") == cliente["usuario"]), None)
    elif cliente.get("id_servicio") is not None:
        sid = str(cliente["id_servicio"])
        match = next((c for c in clients if str(c.get("id_servicio")) == sid), None)
    owner: Record = {"usuario": "", "nombre": "", "id_servicio": None}
    if match is not None:
        owner = {k: match.get(k) for k in ("usuario", "nombre", "id_servicio")}
    owner.update(cliente)
    total = money(given.get("total", "0.00"))
    record: Record = {
        "id_factura": 88000 + index,
        "total": total,
        "sub_total": total,
        "impuestos": "0.00",
        "estado": "Pendiente de Pago",
        "fecha_emision": "",
        "fecha_vencimiento": "",
        "fecha_pago": None,
        "forma_pago": None,
        "articulos": [],
    }
    record.update({k: v for k, v in given.items() if k != "cliente"})
    record["cliente"] = owner
    record["id_factura"] = int(record["id_factura"])
    record["total"] = money(record["total"])
    record["estado"] = INVOICE_STATES.get(str(record["estado"]), record["estado"])
    return record


def complete_plan(given: Record, *, index: int = 0) -> Record:
    """Fill a (fixture) plan with defaults."""
    record: Record = {
        "id": index + 1,
        "nombre": f"Plan {index + 1}",
        "tipo": "PPPOE",
        "precio": "0.00",
        "bajada": "",
        "subida": "",
        "descripcion": "",
    }
    record.update(given)
    record["id"] = int(record["id"])
    record["precio"] = money(record["precio"])
    return record


# ---------------------------------------------------------------------------------------------
# The demo itself

_NAMED: list[Record] = [
    {
        "id_servicio": 10,
        "usuario": "aruiz@fibranet",
        "nombre": "Ana María Ruiz Gómez",
        "cedula": "1020304050",
        "email": "ana.ruiz@correo.com.co",
        "telefono": "3001112233",
        "direccion": "Calle 34 # 17-21, Apto 502",
        "localidad": "Teusaquillo",
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "saldo": "0.00",
        "plan_internet": "Hogar 50 Mbps",
        "zona": "Centro",
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "12/02/2024 09:30:00",
    },
    {
        "id_servicio": 11,
        "usuario": "cperez@fibranet",
        "nombre": "Carlos Andrés Pérez Mora",
        "cedula": "79856321",
        "email": "carlosperez79@correo.com.co",
        "telefono": "3104445566",
        "direccion": "Carrera 68 # 3-45 Sur",
        "localidad": "Kennedy",
        "estado": "Suspendido",
        "estado_facturas": "Vencidas",
        "saldo": "179800.00",
        "plan_internet": "Hogar 50 Mbps",
        "zona": "Sur",
        "fecha_corte": "5/11/2026",
        "fecha_suspension": "6/11/2026",
        "fecha_instalacion": "3/08/2023 14:00:00",
    },
    {
        "id_servicio": 12,
        "usuario": "lpena@fibranet",
        "nombre": "Luz Marina Peña",
        "cedula": "52123456",
        "email": "luzmarina.pena@correo.com.co",
        "telefono": "3157778899",
        "direccion": "Calle 147 # 19-50, Casa 8",
        "localidad": "Usaquén",
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "saldo": "0.00",
        "plan_internet": "Hogar 100 Mbps",
        "zona": "Norte",
        "router": {"falla_general": True, "falla_general_descripcion": NORTH_OUTAGE},
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "20/06/2024 11:15:00",
    },
    {
        "id_servicio": 13,
        "usuario": "jgaitan@fibranet",
        "nombre": "Jorge Eliécer Gaitán Ramírez",
        "cedula": "1098765432",
        "email": "jorge.gaitan@correo.com.co",
        "telefono": "3152223344,3209998877,6014445566",
        "direccion": "Transversal 78 # 65-12",
        "localidad": "Engativá",
        "estado": "Activo",
        "estado_facturas": "Pendiente de Pago",
        "saldo": "59900.00",
        "plan_internet": "Básico 20 Mbps",
        "zona": "Occidente",
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "9/01/2025 16:45:00",
        "_ping": "partial",
    },
    {
        "id_servicio": 14,
        "usuario": "vortiz@fibranet",
        "nombre": "Valentina Ortiz Cárdenas",
        "cedula": "1032456789",
        "email": "valentina.ortiz@correo.com.co",
        "telefono": "3186547890",
        "direccion": "Calle 45 # 12-30, Apto 301",
        "localidad": "Chapinero",
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "saldo": "0.00",
        "plan_internet": "Hogar 50 Mbps",
        "zona": "Centro",
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "1/10/2024 08:00:00",
    },
    {
        "id_servicio": 15,
        "usuario": "vortiz2@fibranet",
        "nombre": "Valentina Ortiz Cárdenas",
        "cedula": "1032456789",
        "email": "valentina.ortiz@correo.com.co",
        "telefono": "3186547890",
        "direccion": "Carrera 7 # 80-15, Local 2",
        "localidad": "Chapinero",
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "saldo": "0.00",
        "plan_internet": "Empresarial 200 Mbps",
        "zona": "Centro",
        # Real exports carry str(None) in empty date fields; the business CPE drops ICMP.
        "fecha_corte": "None",
        "fecha_instalacion": "None",
        "_ping": "firewall",
    },
    {
        "id_servicio": 16,
        "usuario": "projas@fibranet",
        "nombre": "Pedro Pablo Rojas",
        "cedula": "80123456",
        "email": "pedro.rojas@correo.com.co",
        "telefono": "3016665544",
        "direccion": "Calle 128 # 52-18",
        "localidad": "Suba",
        "estado": "Activo",
        "estado_facturas": "Pagadas",
        "saldo": "0.00",
        "plan_internet": "Hogar 100 Mbps",
        "zona": "Norte",
        "fecha_corte": "5/12/2026",
        "fecha_instalacion": "7/07/2023 13:20:00",
    },
]

_FIRST = [
    "Juan",
    "Andrés",
    "Camila",
    "Daniela",
    "Santiago",
    "Sebastián",
    "Laura",
    "Natalia",
    "Diana",
    "Alejandro",
    "Felipe",
    "Paola",
    "Sofía",
    "Mateo",
    "Nicolás",
    "Isabella",
    "Mariana",
    "Julián",
    "Óscar",
    "Ricardo",
    "Gloria",
    "Martha",
    "Claudia",
    "Hernán",
    "Fabio",
    "Yolanda",
    "Esperanza",
    "Wilson",
    "Jhon",
    "Yeimy",
    "Leidy",
    "Brayan",
    "Kevin",
    "Diego",
    "Manuel",
    "Beatriz",
    "Rosa",
    "Cristian",
    "Edwin",
    "Sergio",
    "Adriana",
    "Liliana",
    "Marcela",
    "Alba",
    "Nelson",
    "Hugo",
]
_SECOND = [
    "María",
    "José",
    "Alberto",
    "Fernanda",
    "Andrea",
    "Esteban",
    "Lucía",
    "Carolina",
    "Enrique",
    "Antonio",
]
_SURNAMES = [
    "Rodríguez",
    "Gómez",
    "González",
    "Martínez",
    "García",
    "López",
    "Hernández",
    "Sánchez",
    "Ramírez",
    "Díaz",
    "Muñoz",
    "Moreno",
    "Jiménez",
    "Álvarez",
    "Romero",
    "Valencia",
    "Ríos",
    "Vargas",
    "Castro",
    "Suárez",
    "Ospina",
    "Castaño",
    "Zapata",
    "Quintero",
    "Cardona",
    "Restrepo",
    "Mejía",
    "Osorio",
    "Londoño",
    "Arango",
    "Salazar",
    "Correa",
    "Guerrero",
    "Bedoya",
    "Montoya",
    "Agudelo",
    "Henao",
    "Torres",
]
_STREETS = ("Calle", "Carrera", "Diagonal", "Transversal", "Avenida Calle", "Avenida Carrera")
_MOBILE_PREFIXES = [
    "300",
    "301",
    "302",
    "304",
    "305",
    "310",
    "311",
    "312",
    "313",
    "314",
    "315",
    "316",
    "317",
    "318",
    "319",
    "320",
    "321",
    "350",
]
_FILLER_IDS = [*range(1, 10), *range(17, 268)]  # 260 fillers around the named 10-16
_TICKET_IDS = range(4701, 4776)
_NAMED_TICKETS: dict[int, Record] = {
    4723: {
        "servicio": 10,
        "asunto": "Internet Intermitente",
        "descripcion": "<p>La conexión se cae varias veces al día.</p>",
        "estado": "Resuelto",
        "prioridad": "Normal",
        "fecha_creacion": "2026-10-02T08:41:00-05:00",
    },
    4741: {
        "servicio": 11,
        "asunto": "Reconexión",
        "descripcion": "<p>Solicita reconexión tras pago parcial.</p>",
        "estado": "Cerrado",
        "prioridad": "Alta",
        "fecha_creacion": "2026-10-21T15:05:00-05:00",
    },
    # The real shape of an open ticket: no fecha_creacion, the priority as its code.
    4772: {
        "servicio": 16,
        "asunto": "Internet Lento",
        "descripcion": "<p>El cliente reporta velocidad muy baja en las noches.</p>",
        "estado": "En Progreso",
        "prioridad": "2",
        "fecha_estimada_inicio": "2026-11-24 10:42",
        "fecha_estimada_fin": "2026-11-26 10:42",
        "tecnico": dict(TECHNICIANS[1]),
    },
}


def _filler_clients(rng: random.Random, taken: set[str]) -> list[Record]:
    named_docs = {c["cedula"] for c in _NAMED}
    named_phones = {p for c in _NAMED for p in c["telefono"].split(",")}
    docs: set[str] = set(named_docs)
    phones: set[str] = set(named_phones)
    fillers: list[Record] = []
    zones = list(ZONES)
    for sid in _FILLER_IDS:
        first = rng.choice(_FIRST)
        second = rng.choice(_SECOND) if rng.random() < 0.4 else ""
        nombre = " ".join(w for w in (first, second, *rng.sample(_SURNAMES, 2)) if w)
        while True:
            digits = rng.choice((8, 10, 10, 9))
            doc = str(rng.randrange(10 ** (digits - 1), 10**digits))
            if doc not in docs:
                docs.add(doc)
                break
        numbers = []
        for _ in range(2 if rng.random() < 0.12 else 1):
            while True:
                phone = rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**7):07d}"
                if phone not in phones:
                    phones.add(phone)
                    numbers.append(phone)
                    break
        telefono = "" if rng.random() < 0.05 else ",".join(numbers)
        roll = rng.random()
        estado = (
            "Suspendido"
            if roll < 0.12
            else "Cancelado"
            if roll < 0.15
            else "Gratis"
            if roll < 0.16
            else "Activo"
        )
        plan = rng.choices(PLANS, weights=(5, 3, 1, 2))[0]
        price = float(plan["precio"])
        if estado == "Suspendido":
            facturas, saldo, corte = "Vencidas", 2 * price, "5/11/2026"
        elif estado == "Activo" and rng.random() < 0.2:
            facturas, saldo, corte = "Pendiente de Pago", price, "5/12/2026"
        else:
            facturas, saldo, corte = "Pagadas", 0.0, "5/12/2026"
        zone = rng.choice(zones)
        address = (
            f"{rng.choice(_STREETS)} {rng.randrange(1, 190)} # {rng.randrange(1, 120)}-"
            f"{rng.randrange(1, 99)}"
        )
        if rng.random() < 0.3:
            address += f", Apto {rng.randrange(1, 12)}0{rng.randrange(1, 5)}"
        given: Record = {
            "id_servicio": sid,
            "nombre": nombre,
            "cedula": doc,
            "email": f"{fold(first)}.{fold(nombre.split()[-2])}{sid}@correo.com.co",
            "telefono": telefono,
            "direccion": address,
            "localidad": rng.choice(_LOCALIDADES[zone]),
            "estado": estado,
            "estado_facturas": facturas,
            "saldo": saldo,
            "plan_internet": plan["nombre"],
            "zona": zone,
            "fecha_corte": corte,
            "fecha_instalacion": (
                f"{rng.randrange(1, 29)}/{rng.randrange(1, 13):02d}/{rng.randrange(2022, 2026)} "
                f"{rng.randrange(8, 18):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"
            ),
            "tecnico": rng.choice(TECHNICIANS),
        }
        if estado == "Suspendido":
            given["fecha_suspension"] = "6/11/2026"
        if estado == "Cancelado":
            given["fecha_cancelacion"] = f"{rng.randrange(1, 28)}/0{rng.randrange(1, 10)}/2026"
        fillers.append(complete_client(given, taken=taken))
    return fillers


def _invoices_for(client: Record, next_id: list[int]) -> list[Record]:
    price = client["precio_plan"]
    owner = {k: client[k] for k in ("usuario", "nombre", "id_servicio")}

    def invoice(month: int, estado: str) -> Record:
        next_id[0] += 1
        paid = estado == "Pagada"
        return {
            "id_factura": next_id[0],
            "total": price,
            "sub_total": price,
            "impuestos": "0.00",
            "estado": estado,
            "fecha_emision": f"20/{month - 1:02d}/2026",
            "fecha_vencimiento": f"5/{month:02d}/2026",
            "fecha_pago": f"{3 if month % 2 else 4}/{month:02d}/2026" if paid else None,
            "forma_pago": ("Nequi" if month % 2 else "PSE") if paid else None,
            "articulos": [
                {
                    "descripcion": f"Servicio de internet {client['plan_internet']['nombre']}",
                    "cantidad": 1,
                    "precio": price,
                }
            ],
            "cliente": dict(owner),
        }

    if client["estado"] in {"Cancelado", "Gratis"}:
        return []
    if client["estado_facturas"] == "Vencidas":
        return [
            invoice(10, "Pagada"),
            invoice(11, "Pendiente de Pago"),
            invoice(12, "Pendiente de Pago"),
        ]
    if client["estado_facturas"] == "Pendiente de Pago":
        return [invoice(11, "Pagada"), invoice(12, "Pendiente de Pago")]
    return [invoice(11, "Pagada")]


def _tickets(clients: list[Record], rng: random.Random) -> list[Record]:
    candidates = [
        c for c in clients if c["estado"] in {"Activo", "Suspendido"} and c["id_servicio"] > 16
    ]
    tickets: list[Record] = []
    for n, tid in enumerate(_TICKET_IDS):
        day = n * 85 // len(_TICKET_IDS)  # spread over Sept 1 .. Nov 24
        month, dom = (9, day + 1) if day < 30 else (10, day - 29) if day < 61 else (11, day - 60)
        clock = f"{rng.randrange(7, 19):02d}:{rng.randrange(60):02d}:00"
        created = f"2026-{month:02d}-{dom:02d}T{clock}-05:00"
        if tid in _NAMED_TICKETS:
            given = dict(_NAMED_TICKETS[tid])
        else:
            subject = rng.choice(SUBJECTS[:17])
            # Older tickets are closed; the last few weeks still have open ones.
            estado = (
                rng.choice(("Resuelto", "Cerrado"))
                if n < 55 or rng.random() < 0.5
                else rng.choice(("Nuevo", "En Progreso"))
            )
            given = {
                "servicio": rng.choice(candidates)["id_servicio"],
                "asunto": subject,
                "descripcion": f"<p>{subject}. Reportado por el cliente.</p>",
                "estado": estado,
                "prioridad": rng.choice(list(TICKET_PRIORITIES.values())),
                "fecha_creacion": created,
                "tecnico": rng.choice(TECHNICIANS),
                "origen_reporte": rng.choice(("oficina", "redes_sociales", "portal_cliente")),
            }
        given["id_ticket"] = tid
        tickets.append(complete_ticket(given, clients=clients))
    return tickets


@cache
def _build() -> Data:
    rng = random.Random(20261105)  # fixed seed: every run serves the same demo
    taken = {c["usuario"] for c in _NAMED}
    named = [complete_client(c, taken=taken) for c in _NAMED]
    clients = sorted([*named, *_filler_clients(rng, taken)], key=lambda c: c["id_servicio"])
    next_id = [88000]
    invoices = [inv for c in clients for inv in _invoices_for(c, next_id)]
    return {
        "clients": clients,
        "tickets": _tickets(clients, rng),
        "invoices": invoices,
        "plans": copy.deepcopy(PLANS),
        "payment_methods": copy.deepcopy(PAYMENT_METHODS),
        "promises": [],
    }


def demo_data() -> Data:
    """The FibraNet demo data set, as a fresh deep copy that the caller may mutate."""
    return copy.deepcopy(_build())
