"""The request flows of issue 13 (payment report, payment methods, service requests), each
entered by its ``begin`` through the ``Dialog`` as the free-text router does, or by the client
menu's buttons; WispHub and the agents' side faked, every path asserted by what the customer
(or the agents) see and what WispHub was asked to do."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest

from bot.settings import load_settings
from flows.base import Conversation, FlowContext
from flows.dialog import Dialog, Turn
from flows.ports import AgentRequest, HandoffError
from flows.settings import BusinessHours, DialogSettings
from flows.types import DAYS, ConvKey, Inbound, Kind, Media, Outbound
from integrations.wisphub.errors import TicketUnconfirmed, WispHubUnavailable
from integrations.wisphub.models import Client, PaymentMethod, Ticket, TicketRequest
from tests.flows.test_dialog import Counters, DownWispHub, Record

KEY = ConvKey("telegram", "7001")
NOW = 1_795_000_000.0
ANA = {
    "id_servicio": 10,
    "usuario": "aruiz@isp",
    "nombre": "Ana María Ruiz Gómez",
    "cedula": "1020304050",
    "direccion": "Cra 7 # 12-34",
    "estado": "Suspendido",
    "saldo": "89900.00",
    "tecnico": {"id": 5, "nombre": "Luis"},
}


class FakeWispHub(DownWispHub):
    """Ana's record, open tickets, payment methods; records every ticket POST (anything else
    answers as WispHub down)."""

    def __init__(self) -> None:
        self.open: list[Ticket] = []
        self.posts: list[TicketRequest] = []
        self.methods = [PaymentMethod.model_validate({"id": 1, "nombre": "Nequi"})]
        self.post_error: Exception | None = None
        self.methods_error: Exception | None = None

    async def find_by_document(self, document: str) -> list[Client]:
        return [Client.model_validate(ANA)] if document == ANA["cedula"] else []

    async def open_tickets(self, service_id: int) -> list[Ticket]:
        return [t for t in self.open if t.service and t.service.service_id == service_id]

    async def create_ticket(self, req: TicketRequest) -> Ticket:
        self.posts.append(req)
        if self.post_error is not None:
            error, self.post_error = self.post_error, None
            raise error
        return Ticket.model_validate({"id_ticket": 4800 + len(self.posts), "asunto": req.subject})

    async def payment_methods(self) -> list[PaymentMethod]:
        if self.methods_error is not None:
            raise self.methods_error
        return self.methods


def open_ticket(number: int, subject: str, status: str) -> Ticket:
    """An open ticket of Ana's service."""
    record = {"id_ticket": number, "asunto": subject, "estado": status}
    return Ticket.model_validate({**record, "servicio": {"id_servicio": 10}})


class Agents:
    """The agents' side: topics opened (with their cards), posts forwarded and noted."""

    def __init__(self, *, configured: bool = True, broken: bool = False) -> None:
        self.configured = configured
        self.broken = broken
        self.cards: list[AgentRequest] = []
        self.forwarded: list[tuple[int, Inbound, str]] = []
        self.notes: list[str] = []

    async def open(self, request: AgentRequest, thread_id: int | None) -> int:
        if self.broken:
            msg = "agents' group unreachable"
            raise HandoffError(msg)
        self.cards.append(request)
        return thread_id or 77

    async def forward(self, thread_id: int, inbound: Inbound, label: str) -> None:
        self.forwarded.append((thread_id, inbound, label))

    async def notify(self, thread_id: int, text: str) -> None:
        self.notes.append(text)

    async def close(self, thread_id: int) -> None:
        pass


def closed_now() -> BusinessHours:
    """Hours that never include NOW (another weekday only)."""
    settings = load_settings().dialog()
    weekday = datetime.fromtimestamp(NOW, tz=settings.tz).weekday()
    return BusinessHours.parse(f"{DAYS[(weekday + 1) % 7]} 08:00-09:00")


def make(
    wisphub: FakeWispHub, agents: Agents, **settings: Any
) -> tuple[Dialog[Record], FakeWispHub, Agents]:
    dialog_settings: DialogSettings = dataclasses.replace(load_settings().dialog(), **settings)
    ctx = FlowContext(
        wisphub=wisphub,
        store=Counters(),
        settings=dialog_settings,
        handoff=agents,
        clock=lambda: NOW,
    )
    return Dialog(ctx, lambda lang: Record(lang=lang), Record.from_json), wisphub, agents


def verified(lang: str = "es") -> Record:
    """Ana, verified, at the client menu."""
    data = {"doc": ANA["cedula"], "services": [10], "service_id": 10, "first_name": "Ana"}
    return Record("client.menu", data, lang, verified_until=NOW + 600, updated_at=NOW)


async def enter(dialog: Dialog[Record], record: Record, flow: str, **data: Any) -> list[Outbound]:
    """Fire a flow's ``begin`` through the dialog, as the free-text router does."""
    record.data.update(data)
    conv = Conversation(KEY, record, Inbound(KEY, "e0", text="..."), dialog.ctx)
    await dialog._run(conv, flow, "begin", {})
    return conv.replies


def text(replies: list[Outbound]) -> str:
    return "\n".join([r.text for r in replies] + [o.label for r in replies for o in r.options])


def typed(words: str) -> Inbound:
    return Inbound(KEY, "e1", Kind.TEXT, text=words)


def pressed(option: str) -> Inbound:
    return Inbound(KEY, "e2", Kind.BUTTON, payload=option)


def sent(kind: str, caption: str = "") -> Inbound:
    return Inbound(KEY, "e3", Kind.MEDIA, media=Media(kind, "555", caption))


async def step(dialog: Dialog[Record], record: Record, inbound: Inbound) -> Turn[Record]:
    return await dialog.process(inbound, record)


# -- payment report ----------------------------------------------------------------------------
async def test_a_receipt_photo_files_one_reconnection_ticket_and_reaches_the_agents() -> None:
    dialog, wisphub, agents = make(FakeWispHub(), Agents())
    record = verified()
    asked = await enter(dialog, record, "payment_report")
    assert "foto o documento" in text(asked)
    assert record.state == "payment_report.receipt"

    turn = await step(dialog, record, sent("photo", "pago de noviembre"))

    assert [(p.service_id, p.subject, p.priority, p.technician_id) for p in wisphub.posts] == [
        (10, "Reconexión", "3", 5)
    ]
    assert "pago de noviembre" in wisphub.posts[0].description
    assert "tema del cliente" in wisphub.posts[0].description
    assert [c.request for c in agents.cards] == ["payment_report"]
    assert agents.cards[0].verified_name == "Ana María Ruiz Gómez"
    assert [(thread, inbound.media) for thread, inbound, _ in agents.forwarded] == [
        (77, Media("photo", "555", "pago de noviembre"))
    ]
    assert "ticket #4801" in text(turn.replies)
    assert "asesores" in text(turn.replies)
    assert "Reportar un pago" in text(turn.replies)  # the client menu again
    assert turn.tickets == ["payment"]
    assert turn.session.state == "client.menu"
    assert turn.session.data["topic"] == 77


async def test_a_pdf_receipt_is_a_receipt_too() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    turn = await step(dialog, record, sent("document"))
    assert len(wisphub.posts) == 1
    assert "ticket #4801" in text(turn.replies)


async def test_typed_payment_details_file_the_ticket_without_agents() -> None:
    dialog, wisphub, agents = make(FakeWispHub(), Agents(configured=False))
    record = verified()
    await enter(dialog, record, "payment_report")

    turn = await step(dialog, record, typed("Pagué $89.900 por Nequi el lunes, ref 445566"))

    assert len(wisphub.posts) == 1
    assert wisphub.posts[0].subject == "Reconexión"
    assert "ref 445566" in wisphub.posts[0].description
    assert agents.cards == []
    assert agents.forwarded == []
    assert "ticket #4801" in text(turn.replies)
    assert "reactivamos tu servicio" in text(turn.replies)
    assert turn.session.state == "client.menu"


async def test_typed_details_reach_the_agents_topic_as_a_note() -> None:
    dialog, _, agents = make(FakeWispHub(), Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    await step(dialog, record, typed("transferencia Bancolombia ref 998877"))
    assert agents.notes == [
        "Datos del pago escritos por el cliente: transferencia Bancolombia ref 998877",
        "Ticket #4801 (Reconexión) abierto para validar el pago.",
    ]


async def test_an_open_payment_ticket_is_told_and_no_other_is_filed() -> None:
    wisphub = FakeWispHub()
    wisphub.open = [open_ticket(4711, "Reconexión", "Nuevo")]
    dialog, _, _ = make(wisphub, Agents())
    record = verified()
    replies = await enter(dialog, record, "payment_report")
    assert "#4711" in text(replies)
    assert "no hace falta enviarlo otra vez" in text(replies)
    assert wisphub.posts == []
    assert record.state == "client.menu"


async def test_an_open_ticket_of_another_subject_does_not_stop_the_report() -> None:
    wisphub = FakeWispHub()
    wisphub.open = [open_ticket(4711, "Internet Lento", "Nuevo")]
    dialog, _, _ = make(wisphub, Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    assert record.state == "payment_report.receipt"


async def test_wisphub_500_on_the_post_keeps_the_step_and_the_retry_files_once() -> None:
    wisphub = FakeWispHub()
    dialog, _, agents = make(wisphub, Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    wisphub.post_error = WispHubUnavailable("500")

    failed = await step(dialog, record, sent("photo"))

    assert failed.failure == "wisphub"
    assert "no responde en este momento" in text(failed.replies)
    assert "Hablar con un asesor" in text(failed.replies)
    assert failed.session.state == "payment_report.receipt"
    assert failed.tickets == []
    retried = await step(dialog, failed.session, sent("photo"))
    assert len(wisphub.posts) == 2  # the failed POST and the retry: one ticket filed
    assert retried.tickets == ["payment"]
    assert "ticket #4802" in text(retried.replies)
    assert len(agents.forwarded) == 2  # the receipt again (harmless), never a second ticket


async def test_an_unconfirmed_ticket_is_looked_for_before_posting_again() -> None:
    wisphub = FakeWispHub()
    dialog, _, _ = make(wisphub, Agents(configured=False))
    record = verified()
    await enter(dialog, record, "payment_report")
    wisphub.post_error = TicketUnconfirmed("unknown")

    turn = await step(dialog, record, typed("pagué ayer 89.900 en efectivo"))
    assert turn.session.state == "payment_report.receipt"
    assert "Confirmar" in text(turn.replies)
    again = await step(dialog, turn.session, pressed("confirm"))
    assert [p.recheck for p in wisphub.posts] == [False, True]
    assert wisphub.posts[1].requested_at == wisphub.posts[0].requested_at
    assert "ticket #4802" in text(again.replies)


async def test_a_sticker_or_a_short_text_is_not_a_receipt() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    sticker = await step(dialog, record, sent("sticker"))
    assert "no parece un comprobante" in text(sticker.replies)
    short = await step(dialog, sticker.session, typed("ya"))
    assert "un poco más" in text(short.replies)
    assert wisphub.posts == []
    assert short.session.state == "payment_report.receipt"


async def test_the_topic_failing_still_files_the_ticket() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents(broken=True))
    record = verified()
    await enter(dialog, record, "payment_report")
    turn = await step(dialog, record, sent("photo"))
    assert len(wisphub.posts) == 1
    assert "pídelo al cliente" in wisphub.posts[0].description
    assert "ticket #4801" in text(turn.replies)
    assert "asesores" not in text(turn.replies).split("\n")[0]


async def test_cancel_files_nothing() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents())
    record = verified()
    await enter(dialog, record, "payment_report")
    turn = await step(dialog, record, pressed("cancel"))
    assert "no registré" in text(turn.replies)
    assert wisphub.posts == []
    assert turn.session.state == "client.menu"


async def test_the_client_menu_offers_the_report_in_english() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents(), language="en")
    record = verified("en")
    record.data["opts"] = [["payment_report", "Report a payment"]]
    asked = await step(dialog, record, typed("report a payment"))
    assert "photo or a document" in text(asked.replies)
    turn = await step(dialog, asked.session, sent("photo"))
    assert "ticket #4801" in text(turn.replies)
    assert wisphub.posts[0].subject == "Reconexión"


async def test_media_elsewhere_still_gets_only_text() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents())
    turn = await step(dialog, verified(), sent("photo"))
    assert "solo puedo leer" in text(turn.replies)
    assert wisphub.posts == []


@pytest.mark.parametrize("flow", ["payment_report", "service_request"])
async def test_an_unverified_customer_is_identified_first(flow: str) -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents())
    record = Record("main.menu", {}, "es", updated_at=NOW)
    replies = await enter(dialog, record, flow, request="move")
    assert "verificar que eres el titular" in text(replies)
    assert "documento" in text(replies)
    assert record.state == "identify.ask_document"
    assert wisphub.posts == []


# -- payment methods ---------------------------------------------------------------------------
async def test_payment_methods_and_the_isps_text_then_the_public_menu() -> None:
    own = "Nequi 3001234567 · Bancolombia ahorros 123-456789-01"
    dialog, _, _ = make(FakeWispHub(), Agents(), payment_methods_text=own)
    record = Record("main.menu", {}, "es", updated_at=NOW)
    replies = await enter(dialog, record, "payment_methods")
    assert "Puedes pagar por:\n• Nequi" in text(replies)
    assert own in text(replies)
    assert "Soy cliente" in text(replies)
    assert record.state == "main.menu"


async def test_payment_methods_for_a_verified_customer_end_at_the_client_menu() -> None:
    dialog, _, _ = make(FakeWispHub(), Agents())
    record = verified()
    replies = await enter(dialog, record, "payment_methods")
    assert "• Nequi" in text(replies)
    assert "Estado de cuenta" in text(replies)
    assert record.state == "client.menu"


async def test_payment_methods_with_wisphub_down_show_the_isps_text_alone() -> None:
    wisphub = FakeWispHub()
    wisphub.methods_error = WispHubUnavailable("down")
    dialog, _, _ = make(wisphub, Agents(), payment_methods_text="Efectivo en la oficina")
    record = Record("main.menu", {}, "es", updated_at=NOW)
    replies = await enter(dialog, record, "payment_methods")
    assert "Efectivo en la oficina" in text(replies)
    assert "Puedes pagar por" not in text(replies)


async def test_payment_methods_with_nothing_to_tell_say_so() -> None:
    wisphub = FakeWispHub()
    wisphub.methods = []
    dialog, _, _ = make(wisphub, Agents())
    replies = await enter(dialog, Record("main.menu", {}, "es", updated_at=NOW), "payment_methods")
    assert "un asesor te las puede indicar" in text(replies)


# -- service requests --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_id", "label"),
    [
        ("cancel_service", "Cancelar el servicio"),
        ("change_plan", "Cambiar de plan"),
        ("move", "Cambio de domicilio"),
    ],
)
async def test_within_hours_an_agent_gets_the_request_on_the_card(
    request_id: str, label: str
) -> None:
    dialog, wisphub, agents = make(FakeWispHub(), Agents())
    record = verified()
    replies = await enter(dialog, record, "service_request", request=request_id)
    assert label in text(replies)
    assert "asesor" in text(replies)
    assert [c.request for c in agents.cards] == [request_id]
    assert agents.cards[0].service_id == 10
    assert record.state == "agent.waiting"
    assert "request" not in record.data
    assert "card_request" not in record.data  # a later plain handoff names no request
    assert wisphub.posts == []


@pytest.mark.parametrize(
    ("request_id", "subject", "question"),
    [
        ("cancel_service", "Cancelación", "por qué quieres cancelar"),
        ("move", "Cambio de Domicilio", "nueva dirección"),
        ("change_plan", "Cambio de Plan", "A qué plan"),
    ],
)
async def test_outside_hours_a_confirmed_request_files_its_ticket(
    request_id: str, subject: str, question: str
) -> None:
    dialog, wisphub, agents = make(FakeWispHub(), Agents(), hours=closed_now())
    record = verified()
    asked = await enter(dialog, record, "service_request", request=request_id)
    assert "no hay asesores disponibles" in text(asked)
    assert question in text(asked)
    summary = await step(dialog, record, typed("Calle 5 # 6-7, barrio Centro, desde el lunes"))
    assert "Calle 5 # 6-7" in text(summary.replies)
    assert "Confirmar" in text(summary.replies)
    assert wisphub.posts == []

    done = await step(dialog, summary.session, pressed("confirm"))

    assert [(p.subject, p.priority) for p in wisphub.posts] == [(subject, "1")]
    assert "Calle 5 # 6-7" in wisphub.posts[0].description
    assert "ticket #4801" in text(done.replies)
    assert done.tickets == [request_id]
    assert done.session.state == "client.menu"
    assert agents.cards == []


async def test_without_agents_the_plan_change_files_under_the_configured_subject() -> None:
    mapping = load_settings(wisphub={"subject_plan_change": "Cambio de Velocidad"}).dialog().tickets
    dialog, wisphub, _ = make(FakeWispHub(), Agents(configured=False), tickets=mapping)
    record = verified()
    await enter(dialog, record, "service_request", request="change_plan")
    summary = await step(dialog, record, typed("el de 100 megas"))
    await step(dialog, summary.session, pressed("confirm"))
    assert [p.subject for p in wisphub.posts] == ["Cambio de Velocidad"]


async def test_an_open_ticket_of_the_same_request_is_told_and_nothing_is_filed() -> None:
    wisphub = FakeWispHub()
    wisphub.open = [open_ticket(4712, "Cambio de Domicilio", "En Progreso")]
    dialog, _, _ = make(wisphub, Agents(configured=False))
    record = verified()
    replies = await enter(dialog, record, "service_request", request="move")
    assert "#4712" in text(replies)
    assert wisphub.posts == []
    assert record.state == "client.menu"


async def test_a_request_cancelled_at_the_confirmation_files_nothing() -> None:
    dialog, wisphub, _ = make(FakeWispHub(), Agents(configured=False))
    record = verified()
    await enter(dialog, record, "service_request", request="cancel_service")
    summary = await step(dialog, record, typed("me mudo a otra ciudad"))
    done = await step(dialog, summary.session, pressed("cancel"))
    assert wisphub.posts == []
    assert "request" not in done.session.data
    assert done.session.state == "client.menu"


async def test_the_requests_menu_leads_to_each_request_and_to_the_payment_methods() -> None:
    dialog, _, agents = make(FakeWispHub(), Agents())
    record = verified()
    record.data["opts"] = [["requests", "Otros trámites"]]
    menu = await step(dialog, record, pressed("requests"))
    labels = [o.label for r in menu.replies for o in r.options]
    assert labels == [
        "Formas de pago",
        "Cambiar de plan",
        "Cambio de domicilio",
        "Cancelar el servicio",
        "Menú principal",
    ]
    moved = await step(dialog, menu.session, typed("cambio de domicilio"))
    assert moved.session.state == "agent.waiting"
    assert [c.request for c in agents.cards] == ["move"]

    record = verified()
    record.data["opts"] = [["requests", "Otros trámites"]]
    menu = await step(dialog, record, pressed("requests"))
    methods = await step(dialog, menu.session, pressed("payment_methods"))
    assert "• Nequi" in text(methods.replies)
    assert methods.session.state == "client.menu"


async def test_begin_without_a_named_request_offers_the_requests_menu() -> None:
    dialog, _, agents = make(FakeWispHub(), Agents())
    record = verified()
    replies = await enter(dialog, record, "service_request", request="something else")
    assert "Qué trámite necesitas" in text(replies)
    assert record.state == "service_request.choose"
    assert agents.cards == []


def test_the_new_subjects_and_the_isps_payment_text_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings().dialog()
    assert defaults.tickets.subject_for("payment") == ("Reconexión", "3")
    assert defaults.tickets.subject_for("change_plan") == ("Cambio de Plan", "1")
    assert defaults.tickets.subject_for("cancel_service") == ("Cancelación", "1")
    assert defaults.tickets.subject_for("move") == ("Cambio de Domicilio", "1")
    assert defaults.payment_methods_text == ""
    monkeypatch.setenv("WISPHUB_SUBJECT_PAYMENT", "Pago Reportado")
    monkeypatch.setenv("WISPHUB_SUBJECT_PLAN_CHANGE", "Cambio de Velocidad")
    monkeypatch.setenv("PAYMENT_METHODS_TEXT", "Nequi 3001234567")
    configured = load_settings().dialog()
    assert configured.tickets.subject_for("payment") == ("Pago Reportado", "3")
    assert configured.tickets.subject_for("change_plan") == ("Cambio de Velocidad", "1")
    assert configured.payment_methods_text == "Nequi 3001234567"
