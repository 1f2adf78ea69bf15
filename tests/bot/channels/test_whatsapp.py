"""The WhatsApp channel against a local fake Graph API: webhook, parsing, rendering, retries."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bot.channels.base import ChannelAdapter, DeliveryError, WindowClosed
from bot.channels.whatsapp import (
    WINDOW_SECONDS,
    WhatsAppChannel,
    WhatsAppWebhook,
    national_number,
    split_text,
    verify_signature,
    window_open_at,
)
from bot.channels.whatsapp_parse import parse_webhook
from bot.settings import WhatsAppSettings
from flows.types import ConvKey, Inbound, Kind, Media, Option, Outbound

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import graph_api
from fixtures import fixture
from graph_api import FakeGraph, running_fake_graph, sign, signed_request

TOKEN = "EAAGtestTOKEN0123456789secret"
SECRET = "app-secret-for-tests"
VERIFY = "verify-me-please"
ANA = "573001112233"
LUIS = "573104445566"


def make_settings(api_url: str = "http://127.0.0.1:9/v21.0") -> WhatsAppSettings:
    return WhatsAppSettings(
        access_token=SecretStr(TOKEN),
        phone_number_id=graph_api.PHONE_NUMBER_ID,
        app_secret=SecretStr(SECRET),
        verify_token=SecretStr(VERIFY),
        api_url=api_url,
    )


def key(wa_id: str = ANA) -> ConvKey:
    return ConvKey("whatsapp", wa_id)


def options(n: int, label: str = "Option number {}") -> tuple[Option, ...]:
    return tuple(Option(f"opt{i}", label.format(i)) for i in range(1, n + 1))


@pytest.fixture
async def fake() -> AsyncIterator[FakeGraph]:
    async with running_fake_graph(TOKEN) as graph:
        yield graph


@pytest.fixture
async def channel(fake: FakeGraph) -> AsyncIterator[WhatsAppChannel]:
    chan = WhatsAppChannel(
        make_settings(fake.base_url),
        backoff=0.001,
        max_backoff=0.005,
        list_button="Elegir",
        more_label="Ver más",
    )
    yield chan
    await chan.aclose()


@dataclass
class Hook:
    client: TestClient[web.Request, web.Application]
    webhook: WhatsAppWebhook
    received: list[Inbound] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)

    async def post(self, payload: dict[str, Any], secret: str = SECRET) -> int:
        body, headers = signed_request(payload, secret)
        response = await self.client.post("/webhooks/whatsapp", data=body, headers=headers)
        await self.webhook.drain()
        return response.status


def serve(webhook: WhatsAppWebhook) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_get("/webhooks/whatsapp", webhook.get)
    app.router.add_post("/webhooks/whatsapp", webhook.post)
    return TestClient(TestServer(app))


def hook_with(
    received: list[Inbound],
    sink: Callable[[Inbound], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> tuple[WhatsAppWebhook, list[str]]:
    reads: list[str] = []

    async def record(inbound: Inbound) -> None:
        received.append(inbound)

    async def mark(wamid: str) -> None:
        reads.append(wamid)

    return WhatsAppWebhook(make_settings(), sink or record, on_mark_read=mark, **kwargs), reads


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    received: list[Inbound] = []
    webhook, reads = hook_with(received)
    async with serve(webhook) as client:
        yield Hook(client, webhook, received, reads)


# --------------------------------------------------------------------------- signature


def test_signature_matches_the_raw_body() -> None:
    body = b'{"entry": []}'
    assert verify_signature(body, sign(body, SECRET), SecretStr(SECRET))
    assert verify_signature(
        body, sign(body, SECRET).upper().replace("SHA256", "sha256"), SecretStr(SECRET)
    )


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=zz" + "0" * 62,
        "sha1=" + "0" * 40,
        "0" * 64,
        "sha256=" + "0" * 63,
        "sha256=" + "é" * 64,
        sign(b"other body", SECRET),
        sign(b'{"entry": []}', "wrong secret"),
    ],
)
def test_bad_signatures_are_refused(header: str | None) -> None:
    assert not verify_signature(b'{"entry": []}', header, SecretStr(SECRET))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=nothex"},
        {"X-Hub-Signature-256": sign(b"{}", "wrong secret")},
    ],
    ids=["missing", "malformed", "wrong"],
)
async def test_webhook_without_a_valid_signature_gets_403_and_is_not_handled(
    hook: Hook, headers: dict[str, str]
) -> None:
    body = json.dumps(graph_api.inbound_text(ANA, "hola")).encode()
    response = await hook.client.post("/webhooks/whatsapp", data=body, headers=headers)
    await hook.webhook.drain()
    assert response.status == 403
    assert hook.received == []
    assert hook.reads == []


async def test_a_body_changed_after_signing_is_refused(hook: Hook) -> None:
    body, headers = signed_request(graph_api.inbound_text(ANA, "hola"), SECRET)
    tampered = body.replace(b"hola", b"HOLA")
    response = await hook.client.post("/webhooks/whatsapp", data=tampered, headers=headers)
    await hook.webhook.drain()
    assert response.status == 403
    assert hook.received == []


async def test_webhook_refuses_everything_when_no_app_secret_is_set() -> None:
    received: list[Inbound] = []

    async def sink(inbound: Inbound) -> None:
        received.append(inbound)

    settings = make_settings().model_copy(update={"app_secret": None})
    webhook = WhatsAppWebhook(settings, sink)
    async with serve(webhook) as client:
        body, headers = signed_request(graph_api.inbound_text(ANA, "hola"), SECRET)
        response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
    assert response.status == 403
    assert received == []


# --------------------------------------------------------------------------- handshake


async def test_verification_handshake_echoes_the_challenge(hook: Hook) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
    response = await hook.client.get("/webhooks/whatsapp", params=params)
    assert response.status == 200
    assert await response.text() == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
        {"hub.verify_token": VERIFY, "hub.challenge": "1"},
        {},
    ],
    ids=["wrong-token", "wrong-mode", "no-mode", "nothing"],
)
async def test_verification_handshake_refused(hook: Hook, params: dict[str, str]) -> None:
    response = await hook.client.get("/webhooks/whatsapp", params=params)
    assert response.status == 403
    assert "1" not in await response.text()


# --------------------------------------------------------------------------- webhook POST


async def test_signed_text_is_handed_to_the_sink_and_marked_read(hook: Hook) -> None:
    payload = graph_api.inbound_text(ANA, "hola", wamid="wamid.A1")
    assert await hook.post(payload) == 200
    assert [(i.key, i.event_id, i.kind, i.text) for i in hook.received] == [
        (key(), "wamid.A1", Kind.TEXT, "hola")
    ]
    assert hook.reads == ["wamid.A1"]


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"", b"[1, 2]", b'"text"'])
async def test_malformed_json_with_a_good_signature_gets_400(
    hook: Hook, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Hub-Signature-256": sign(body, SECRET)}
    with caplog.at_level(logging.WARNING, logger="bot.channels.whatsapp"):
        response = await hook.client.post("/webhooks/whatsapp", data=body, headers=headers)
        await hook.webhook.drain()
    assert response.status == 400
    assert hook.received == []
    assert len(caplog.records) == 1  # every refusal says why, once


@pytest.mark.parametrize("depth", [65, 1025, 5000])
async def test_json_nested_too_deep_gets_400(hook: Hook, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    for raw in (body, b'{"entry": ' + body + b', "x": "\\ud800"}'):  # orjson's refusal, or ours
        headers = {"X-Hub-Signature-256": sign(raw, SECRET)}
        response = await hook.client.post("/webhooks/whatsapp", data=raw, headers=headers)
        assert response.status == 400
    assert hook.received == []


async def test_a_lone_surrogate_makes_its_message_junk_and_the_others_are_handled(
    hook: Hook,
) -> None:
    payload = graph_api.batch(
        graph_api.inbound_text(ANA, "hola", wamid="wamid.OK1"),
        graph_api.inbound_text(LUIS, "bad \ud800 text", wamid="wamid.BAD"),
        graph_api.inbound_button(ANA, "opt1", "Uno \udfff", wamid="wamid.BAD2"),
        graph_api.inbound_text("\ud800", "who", wamid="wamid.NOSENDER"),
        graph_api.inbound_text(LUIS, "sigo aquí", wamid="wamid.OK2"),
    )
    assert "\\ud800" in json.dumps(payload)  # escaped, as Meta would send it
    assert await hook.post(payload) == 200
    assert [(i.event_id, i.kind, i.text) for i in hook.received] == [
        ("wamid.OK1", Kind.TEXT, "hola"),
        ("wamid.BAD", Kind.OTHER, ""),
        ("wamid.BAD2", Kind.OTHER, ""),
        ("wamid.OK2", Kind.TEXT, "sigo aquí"),
    ]
    assert all(i.to_json().encode() for i in hook.received)  # storable


async def test_statuses_are_acknowledged_and_ignored(hook: Hook) -> None:
    for status in ("sent", "delivered", "read", "failed"):
        assert await hook.post(graph_api.status_update(ANA, "wamid.OUT1", status)) == 200
    assert hook.received == []
    assert hook.reads == []


async def test_with_placing_the_answer_waits_for_the_events_places() -> None:
    """Meta forgets what was answered 200: with ``placing``, the POST is answered once the
    event has its place in the store, and 503 (Meta sends it again) when it cannot get one."""
    placed_first = asyncio.Event()
    store_up = True
    handled: list[str] = []

    async def placing(inbound: Inbound, placed: Callable[[], None]) -> None:
        if not store_up:
            raise RuntimeError("session store unavailable")
        await placed_first.wait()
        placed()
        handled.append(inbound.text)

    async def unused(inbound: Inbound) -> None:
        pytest.fail("the plain sink is not used when placing is given")

    webhook = WhatsAppWebhook(make_settings(), unused, placing=placing, place_timeout=2)
    async with serve(webhook) as client:
        body, headers = signed_request(graph_api.inbound_text(ANA, "hola"), SECRET)
        answer = asyncio.ensure_future(
            client.post("/webhooks/whatsapp", data=body, headers=headers)
        )
        await asyncio.sleep(0.2)
        assert not answer.done()  # not answered before the event has its place
        placed_first.set()
        assert (await answer).status == 200
        store_up = False
        body, headers = signed_request(graph_api.inbound_text(ANA, "sigo"), SECRET)
        response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
        assert response.status == 503
        await webhook.drain()
    assert handled == ["hola"]


async def test_answer_comes_before_handling_and_drain_waits_for_it() -> None:
    release = asyncio.Event()
    received: list[Inbound] = []

    async def slow_sink(inbound: Inbound) -> None:
        await release.wait()
        received.append(inbound)

    webhook, _ = hook_with(received, slow_sink)
    async with serve(webhook) as client:
        body, headers = signed_request(graph_api.inbound_text(ANA, "hola"), SECRET)
        response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
        assert response.status == 200
        assert received == []  # answered while the sink is still busy
        release.set()
        await webhook.drain()
    assert [i.text for i in received] == ["hola"]


async def test_a_failing_event_does_not_drop_the_next_one_of_the_same_call() -> None:
    received: list[Inbound] = []

    async def picky_sink(inbound: Inbound) -> None:
        if inbound.text == "boom":
            raise RuntimeError("engine bug")
        received.append(inbound)

    first = graph_api.inbound_text(ANA, "boom")
    second = graph_api.inbound_text(ANA, "after")
    value = first["entry"][0]["changes"][0]["value"]
    value["messages"] += second["entry"][0]["changes"][0]["value"]["messages"]
    webhook, _ = hook_with(received, picky_sink)
    async with serve(webhook) as client:
        body, headers = signed_request(first, SECRET)
        response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
        await webhook.drain()
    assert response.status == 200
    assert [i.text for i in received] == ["after"]


async def test_events_reach_the_sink_in_arrival_order(hook: Hook) -> None:
    for n in range(10):
        body, headers = signed_request(graph_api.inbound_text(ANA, str(n)), SECRET)
        response = await hook.client.post("/webhooks/whatsapp", data=body, headers=headers)
        assert response.status == 200
    await hook.webhook.drain()
    assert [i.text for i in hook.received] == [str(n) for n in range(10)]


# --------------------------------------------------------------------------- parsing


def only(payload: dict[str, Any]) -> Inbound:
    events = parse_webhook(payload)
    assert len(events) == 1
    return events[0]


def test_parse_text_carries_sender_phone_and_profile_name() -> None:
    event = only(graph_api.inbound_text(ANA, "Hola!", wamid="wamid.X1"))
    assert event.key == ConvKey("whatsapp", ANA)
    assert event.event_id == "wamid.X1"
    assert (event.kind, event.text) == (Kind.TEXT, "Hola!")
    assert event.phone == "+" + ANA
    assert event.display_name == "Ana"


def test_parse_button_reply() -> None:
    event = only(graph_api.inbound_button(ANA, "menu.client", "Soy cliente"))
    assert (event.kind, event.payload, event.text) == (Kind.BUTTON, "menu.client", "Soy cliente")


def test_parse_list_reply() -> None:
    event = only(graph_api.inbound_list(ANA, "fault.slow", "Internet lento", "más detalles"))
    assert (event.kind, event.payload) == (Kind.BUTTON, "fault.slow")


def test_parse_template_quick_reply() -> None:
    event = only(graph_api.inbound_template_button(ANA, "promise.yes", "Sí"))
    assert (event.kind, event.payload) == (Kind.BUTTON, "promise.yes")


def test_parse_a_card_of_another_number_carries_no_phone() -> None:
    """Anyone can share anyone's card: it must never stand for the sender's number."""
    event = only(graph_api.inbound_contact(ANA, "+57 310 444 5566", contact_wa_id=LUIS))
    assert (event.kind, event.phone) == (Kind.CONTACT, None)
    without_wa_id = only(graph_api.inbound_contact(ANA, "+57 (310) 444-5566"))
    assert (without_wa_id.kind, without_wa_id.phone) == (Kind.CONTACT, None)


def test_parse_a_card_of_the_senders_own_number_carries_it() -> None:
    event = only(graph_api.inbound_contact(LUIS, "+57 310 444 5566", contact_wa_id=LUIS))
    assert (event.kind, event.phone) == (Kind.CONTACT, "+" + LUIS)
    without_wa_id = only(graph_api.inbound_contact(LUIS, "+57 (310) 444-5566"))
    assert without_wa_id.phone == "+" + LUIS


def test_parse_a_card_without_numbers_is_other() -> None:
    payload = graph_api.inbound_contact(ANA, "")
    event = only(payload)
    assert (event.kind, event.phone) == (Kind.OTHER, "+" + ANA)


@pytest.mark.parametrize(
    ("kind", "extra", "neutral"),
    [
        ("image", {"caption": "router"}, "photo"),
        ("audio", {"voice": True}, "voice"),
        ("audio", {}, "audio"),
        ("video", {}, "video"),
        ("document", {}, "document"),
        ("sticker", {}, "sticker"),
    ],
)
def test_parse_media_keeps_the_media_id(kind: str, extra: dict[str, Any], neutral: str) -> None:
    event = only(graph_api.inbound_media(ANA, kind, "987654", **extra))
    assert event.kind is Kind.MEDIA
    assert event.media == Media(neutral, "987654", extra.get("caption", ""))


def test_parse_location() -> None:
    event = only(graph_api.inbound_location(ANA, 4.6097, -74.0817, "Casa"))
    assert event.kind is Kind.MEDIA
    assert event.media == Media("location", "4.6097,-74.0817", "Casa")


def test_parse_unknown_types_as_other() -> None:
    payload = graph_api.inbound_text(ANA, "x")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(type="unsupported", errors=[{"code": 131051, "title": "Unsupported type"}])
    del message["text"]
    assert only(payload).kind is Kind.OTHER


SHAPES = fixture("whatsapp/real_shapes.yaml")
BSUID = SHAPES["username_text"]["contacts"][0]["user_id"]


def test_parse_a_username_user_is_keyed_by_the_business_scoped_id_without_a_phone() -> None:
    event = only(graph_api.from_shape(SHAPES["username_text"]))
    assert event.key == ConvKey("whatsapp", BSUID)
    assert (event.kind, event.text, event.phone) == (Kind.TEXT, "hola", None)
    assert event.display_name == "Ana Ruiz"


def test_parse_a_message_with_both_ids_is_keyed_by_the_phone() -> None:
    event = only(graph_api.from_shape(SHAPES["phone_and_user_id_text"]))
    assert (event.key, event.phone) == (ConvKey("whatsapp", ANA), "+" + ANA)


def test_parse_reactions_and_edits_as_notes_and_a_number_change_as_a_move() -> None:
    reaction = only(graph_api.from_shape(SHAPES["reaction"]))
    assert (reaction.kind, reaction.payload, reaction.text) == (Kind.NOTE, "reaction", "👍")
    edit = only(graph_api.from_shape(SHAPES["edit"]))
    assert (edit.kind, edit.payload) == (Kind.NOTE, "edit")
    assert edit.text == "perdón, quise decir desde el lunes"
    moved = only(graph_api.from_shape(SHAPES["number_changed"]))
    assert (moved.key, moved.kind, moved.payload) == (key(), Kind.MOVED, "573009998877")


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ("revoke", "revoked message"),
        ("identity_changed", "system message"),
        ("group_text", "group message"),
        ("no_sender", "no sender or message id"),
    ],
)
def test_parse_drops_what_is_not_a_customers_message_with_one_log_line(
    shape: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.channels.whatsapp"):
        assert parse_webhook(graph_api.from_shape(SHAPES[shape]), graph_api.PHONE_NUMBER_ID) == []
    assert [r.__dict__["reason"] for r in caplog.records] == [reason]


def test_parse_drops_messages_for_another_phone_number_id_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = graph_api.inbound_text(ANA, "hola")
    other = graph_api.webhook(
        payload["entry"][0]["changes"][0]["value"]["messages"], phone_number_id="1098765"
    )
    with caplog.at_level(logging.WARNING, logger="bot.channels.whatsapp"):
        assert parse_webhook(other, graph_api.PHONE_NUMBER_ID) == []
        assert len(parse_webhook(payload, graph_api.PHONE_NUMBER_ID)) == 1
    [record] = caplog.records
    assert record.__dict__["phone_number_id"] == 1098765


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"entry": "nope"},
        {"entry": [None, 3, "x"]},
        {"entry": [{"changes": [{"value": None}]}]},
        {"entry": [{"changes": [{"value": {"messages": [{"from": 5, "id": "w"}]}}]}]},
        {"entry": [{"changes": [{"value": {"messages": [{"from": ANA}]}}]}]},
        {"entry": [{"changes": [{"value": {"messages": "many"}}]}]},
    ],
)
def test_malformed_payloads_yield_nothing(payload: dict[str, Any]) -> None:
    assert parse_webhook(payload) == []


def test_odd_fields_inside_a_message_do_not_raise() -> None:
    payload = graph_api.inbound_text(ANA, "x")
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"][0]["text"] = None
    value["contacts"] = [{"wa_id": ANA, "profile": "not a dict"}]
    event = only(payload)
    assert (event.kind, event.text, event.display_name) == (Kind.TEXT, "", None)


# --------------------------------------------------------------------------- sending


async def test_plain_text_is_sent_with_the_bearer_token(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    await channel.send(Outbound(key(), "Hola Ana"))
    [message] = fake.messages_to(ANA)
    assert message["type"] == "text"
    assert message["text"]["body"] == "Hola Ana"


async def test_a_business_scoped_id_is_sent_in_recipient_and_a_phone_in_to(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    await channel.send(Outbound(key(BSUID), "Hola", options(2)))
    await channel.send(Outbound(key(), "Hola Ana"))
    assert [("to" in m, m.get("recipient")) for m in fake.messages_to(BSUID)] == [(False, BSUID)]
    assert [(m["to"], "recipient" in m) for m in fake.messages_to(ANA)] == [(ANA, False)]


async def test_wrong_token_is_a_delivery_error_without_retry(fake: FakeGraph) -> None:
    settings = make_settings(fake.base_url).model_copy(
        update={"access_token": SecretStr("EAAGwrong")}
    )
    chan = WhatsAppChannel(settings, backoff=0.001)
    try:
        with pytest.raises(DeliveryError, match="190"):
            await chan.send(Outbound(key(), "hola"))
    finally:
        await chan.aclose()
    assert fake.messages == []


async def test_long_text_is_split_into_pieces_of_4096(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    words = " ".join(f"palabra{i}" for i in range(1500))  # ~18,000 characters
    await channel.send(Outbound(key(), words))
    bodies = [m["text"]["body"] for m in fake.messages_to(ANA)]
    assert len(bodies) == 5
    assert all(4000 < len(b) <= 4096 for b in bodies[:-1])
    assert " ".join(bodies).split() == words.split()  # cut between words, nothing lost


def test_split_text_hard_cuts_a_single_huge_word() -> None:
    pieces = split_text("x" * 9000)
    assert [len(p) for p in pieces] == [4096, 4096, 808]


async def test_up_to_three_options_are_reply_buttons(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    opts = (
        Option("a", "Estado de cuenta y facturas pendientes"),
        Option("b", "Estado de cuenta y facturas pagadas"),
        Option("c", "Salir"),
    )
    await channel.send(Outbound(key(), "¿Qué necesitas?", opts))
    [message] = fake.messages_to(ANA)
    interactive = message["interactive"]
    assert interactive["type"] == "button"
    assert interactive["body"]["text"] == "¿Qué necesitas?"
    replies = [b["reply"] for b in interactive["action"]["buttons"]]
    assert [r["id"] for r in replies] == ["a", "b", "c"]
    titles = [r["title"] for r in replies]
    assert all(len(t) <= 20 for t in titles)
    assert len(set(titles)) == 3  # the two long labels share their first 20 characters
    assert titles[2] == "Salir"


async def test_four_to_ten_options_are_a_list(fake: FakeGraph, channel: WhatsAppChannel) -> None:
    opts = (*options(6), Option("long", "Internet intermitente desde hace varios días en la casa"))
    await channel.send(Outbound(key(), "Elige una opción", opts))
    [message] = fake.messages_to(ANA)
    interactive = message["interactive"]
    assert interactive["type"] == "list"
    assert interactive["action"]["button"] == "Elegir"
    rows = interactive["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == [o.id for o in opts]
    assert all(len(r["title"]) <= 24 for r in rows)
    long_row = rows[-1]
    assert long_row["title"] == "Internet intermitente"
    assert long_row["description"] == "desde hace varios días en la casa"


async def test_more_than_ten_options_are_paged_with_a_more_row(fake: FakeGraph) -> None:
    received: list[Inbound] = []
    chan = WhatsAppChannel(make_settings(fake.base_url), list_button="Elegir", more_label="Ver más")
    webhook, _ = hook_with(received, channel=chan)
    opts = options(23)
    try:
        async with serve(webhook) as client:
            await chan.send(Outbound(key(), "Elige tu plan", opts))
            [first] = await fake.wait_for_messages(ANA, 1)
            rows = first["interactive"]["action"]["sections"][0]["rows"]
            assert len(rows) == 10
            assert rows[-1] == {"id": "__more:1", "title": "Ver más"}

            seen = [r["id"] for r in rows[:-1]]
            for page in (1, 2):
                body, headers = signed_request(
                    graph_api.inbound_list(ANA, f"__more:{page}", "Ver más"), SECRET
                )
                response = await client.post("/webhooks/whatsapp", data=body, headers=headers)
                assert response.status == 200
                sent = await fake.wait_for_messages(ANA, page + 1)
                rows = sent[-1]["interactive"]["action"]["sections"][0]["rows"]
                seen += [r["id"] for r in rows if not r["id"].startswith("__more:")]
            assert rows[-1]["id"] != "__more:3"  # the last page has no "more" row
            assert seen == [o.id for o in opts]

            # A real choice goes to the engine as usual.
            body, headers = signed_request(graph_api.inbound_list(ANA, "opt20", "x"), SECRET)
            await client.post("/webhooks/whatsapp", data=body, headers=headers)
            await webhook.drain()
    finally:
        await chan.aclose()
    assert [i.payload for i in received] == ["opt20"]


async def test_long_question_with_options_keeps_the_body_within_1024(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    text = "Detalle de la factura. " * 150 + "\n¿Confirmas?"
    await channel.send(Outbound(key(), text, options(2)))
    sent = fake.messages_to(ANA)
    assert [m["type"] for m in sent] == ["text", "interactive"]
    body = sent[-1]["interactive"]["body"]["text"]
    assert len(body) <= 1024
    assert body.endswith("¿Confirmas?")


async def test_options_without_text_still_have_a_body(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    await channel.send(Outbound(key(), "", options(2)))
    [message] = fake.messages_to(ANA)
    assert message["interactive"]["body"]["text"] == "Elegir"


async def test_media_reply_is_sent_by_link_or_id(fake: FakeGraph, channel: WhatsAppChannel) -> None:
    await channel.send(Outbound(key(), "", media=Media("photo", "https://x.test/a.jpg", "mira")))
    await channel.send(Outbound(key(), "", media=Media("document", "55501"), source_key=key()))
    first, second = fake.messages_to(ANA)
    assert first["image"] == {"link": "https://x.test/a.jpg", "caption": "mira"}
    assert second["document"] == {"id": "55501"}


@pytest.mark.parametrize(
    "source",
    [None, ConvKey("telegram", "-1001234567890")],
    ids=["unknown-source", "telegram-message"],
)
async def test_media_of_another_channel_is_refused_before_sending(
    fake: FakeGraph, channel: WhatsAppChannel, source: ConvKey | None
) -> None:
    # An agent's attachment is a Telegram message id: Graph cannot resolve it as a media id.
    reply = Outbound(key(), "mira la foto", media=Media("photo", "57", "foto"), source_key=source)
    with pytest.raises(DeliveryError, match="another channel"):
        await channel.send(reply)
    assert fake.attempts == 0


# --------------------------------------------------------------------------- retries and errors


@pytest.mark.parametrize(
    "fault",
    [
        {"code": 130429},
        {"code": 131056},
        {"status": 429},
        {"status": 503},
        {"code": 131000, "status": 500},
    ],
    ids=["throughput", "pair-rate", "http-429", "http-503", "graph-500"],
)
async def test_transient_errors_are_retried_and_delivered_once(
    fake: FakeGraph, channel: WhatsAppChannel, fault: dict[str, Any]
) -> None:
    fake.fail(count=2, **fault)
    await channel.send(Outbound(key(), "hola"))
    assert [m["text"]["body"] for m in fake.messages_to(ANA)] == ["hola"]
    assert fake.attempts == 3


async def test_retry_after_is_honoured(fake: FakeGraph, channel: WhatsAppChannel) -> None:
    fake.fail(status=429, retry_after=0.01)
    await channel.send(Outbound(key(), "hola"))
    assert len(fake.messages_to(ANA)) == 1


async def test_transport_errors_are_retried(fake: FakeGraph, channel: WhatsAppChannel) -> None:
    fake.drop()  # the first request's connection is dropped unanswered
    await channel.send(Outbound(key(), "hola"))
    assert fake.dropped == 0
    assert [m["text"]["body"] for m in fake.messages_to(ANA)] == ["hola"]


async def test_a_hung_graph_call_is_given_up_and_its_connection_freed(fake: FakeGraph) -> None:
    """A request Graph never answers ends at the client's timeout; with one connection in the
    pool, the next request still gets it (the slot was freed, not leaked)."""
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        chan = WhatsAppChannel(
            make_settings(fake.base_url), http, max_retries=0, message_timeout=timeout
        )
        fake.stall(1.0)  # longer than the client's timeout
        with pytest.raises(DeliveryError, match="transport error"):
            await chan.send(Outbound(key(), "first"))
        fake.reset()
        await chan.send(Outbound(key(), "second"))
    assert [m["text"]["body"] for m in fake.messages_to(ANA)] == ["second"]


async def test_every_graph_call_reports_its_outcome(fake: FakeGraph) -> None:
    outcomes: list[bool] = []
    chan = WhatsAppChannel(
        make_settings(fake.base_url), backoff=0.001, max_retries=1, on_outcome=outcomes.append
    )
    try:
        fake.fail(status=503)
        await chan.send(Outbound(key(), "hola"))  # a failure, then a success
        fake.close_window(LUIS)
        with pytest.raises(WindowClosed):  # Graph answered: the channel works
            await chan.send(Outbound(key(LUIS), "hola"))
        fake.fail(status=500, count=5)
        with pytest.raises(DeliveryError):
            await chan.send(Outbound(key(), "again"))
    finally:
        await chan.aclose()
    assert outcomes == [False, True, True, False, False]


async def test_persistent_failure_gives_up_with_delivery_error(fake: FakeGraph) -> None:
    chan = WhatsAppChannel(make_settings(fake.base_url), max_retries=2, backoff=0.001)
    fake.fail(status=503, count=10)
    try:
        with pytest.raises(DeliveryError, match="3 attempts"):
            await chan.send(Outbound(key(), "hola"))
    finally:
        await chan.aclose()
    assert fake.attempts == 3
    assert fake.messages == []


async def test_closed_window_raises_window_closed_without_retry(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.close_window(ANA)
    with pytest.raises(WindowClosed, match="131047"):
        await channel.send(Outbound(key(), "¿Sigues ahí?"))
    assert fake.attempts == 1
    await channel.send(Outbound(key(LUIS), "hola"))  # other customers are not affected
    assert len(fake.messages_to(LUIS)) == 1


async def test_a_window_known_closed_fails_fast_until_the_customer_writes(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.close_window(ANA)
    with pytest.raises(WindowClosed):
        await channel.send(Outbound(key(), "¿Sigues ahí?"))
    with pytest.raises(WindowClosed):
        await channel.send(Outbound(key(), "¿Hola?"))
    assert fake.attempts == 1  # the second message cost no doomed API call
    fake.closed_windows.clear()
    channel.note_inbound(ANA, time.time())  # the customer wrote: the window is open again
    await channel.send(Outbound(key(), "Hola de nuevo"))
    assert len(fake.messages_to(ANA)) == 1


async def test_a_window_that_expired_in_this_process_is_refused_without_a_call(
    fake: FakeGraph,
) -> None:
    now = [50_000.0]
    chan = WhatsAppChannel(make_settings(fake.base_url), clock=lambda: now[0])
    try:
        chan.note_inbound(ANA, 50_000.0)
        await chan.send(Outbound(key(), "dentro de la ventana"))
        now[0] += WINDOW_SECONDS
        with pytest.raises(WindowClosed, match="24 hours"):
            await chan.send(Outbound(key(), "fuera de la ventana"))
        await chan.send(Outbound(key(LUIS), "unknown window: Graph decides"))
    finally:
        await chan.aclose()
    assert [m["to"] for m in fake.messages] == [ANA, LUIS]


async def test_other_4xx_is_a_delivery_error_without_retry(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.fail(code=100, status=400)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(Outbound(key(), "hola"))
    assert not isinstance(caught.value, WindowClosed)
    assert fake.attempts == 1
    assert fake.messages == []


async def test_per_chat_order_is_kept_while_one_reply_is_retried(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.fail(code=130429, count=3, to=ANA)
    await asyncio.gather(
        *(channel.send(Outbound(key(), f"msg {n}")) for n in range(5)),
        channel.send(Outbound(key(LUIS), "otro chat")),
    )
    assert [m["text"]["body"] for m in fake.messages_to(ANA)] == [f"msg {n}" for n in range(5)]
    assert len(fake.messages_to(LUIS)) == 1


# --------------------------------------------------------------------------- read, media, window


async def test_mark_read(fake: FakeGraph, channel: WhatsAppChannel) -> None:
    await channel.mark_read("wamid.IN1")
    assert fake.reads == ["wamid.IN1"]


async def test_mark_read_failure_is_logged_not_raised(
    fake: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(fake.base_url).model_copy(update={"access_token": SecretStr("bad")})
    chan = WhatsAppChannel(settings, backoff=0.001)
    await chan.mark_read("wamid.IN1")
    await chan.aclose()
    assert fake.reads == []
    assert "mark-read failed" in caplog.text


async def test_fetch_media_downloads_bytes_and_mime(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.add_media("77001", b"\x89PNG fake image", "image/png")
    assert await channel.fetch_media("77001") == (b"\x89PNG fake image", "image/png")
    with pytest.raises(DeliveryError):
        await channel.fetch_media("missing")


async def test_upload_media_returns_a_sendable_id(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    media_id = await channel.upload_media(b"%PDF-1.4", "application/pdf", "factura.pdf")
    assert fake.uploads[media_id] == (b"%PDF-1.4", "application/pdf")
    reply = Outbound(key(), "", media=Media("document", media_id, "Tu factura"), source_key=key())
    await channel.send(reply)
    assert fake.messages_to(ANA)[0]["document"]["id"] == media_id


async def test_send_media_sends_an_uploaded_photo_or_document_with_its_caption(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    photo = await channel.upload_media(b"\xff\xd8\xff", "image/jpeg", "photo.jpg")
    document = await channel.upload_media(b"%PDF-1.4", "application/pdf", "document.pdf")
    await channel.send_media(ANA, photo, "photo", "la factura")
    await channel.send_media(ANA, document, "document")
    sent = fake.messages_to(ANA)
    assert [(m["type"], m[m["type"]]) for m in sent] == [
        ("image", {"id": photo, "caption": "la factura"}),
        ("document", {"id": document}),
    ]


async def test_send_media_keeps_the_24_hour_window_rules(
    fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    media_id = await channel.upload_media(b"\xff\xd8\xff", "image/jpeg", "photo.jpg")
    fake.close_window(ANA)
    with pytest.raises(WindowClosed, match="131047"):
        await channel.send_media(ANA, media_id, "photo", "la factura")
    with pytest.raises(WindowClosed, match="24 hours"):  # known closed: no doomed call
        await channel.send_media(ANA, media_id, "photo")
    assert fake.attempts == 1
    assert fake.messages_to(ANA) == []


@pytest.mark.parametrize(
    ("last", "now", "is_open"),
    [
        (None, 1000.0, False),
        (1000.0, 1000.0, True),
        (1000.0, 1000.0 + WINDOW_SECONDS - 1, True),
        (1000.0, 1000.0 + WINDOW_SECONDS, False),
        (1000.0, 1000.0 + WINDOW_SECONDS + 1, False),
        (1000.0, 900.0, True),  # the clock a little behind the message's timestamp
    ],
)
def test_window_open_at(last: float | None, now: float, is_open: bool) -> None:
    assert window_open_at(last, now) is is_open


async def test_webhook_opens_the_window_from_the_message_timestamp() -> None:
    now = [10_000.0]
    chan = WhatsAppChannel(make_settings(), clock=lambda: now[0])
    received: list[Inbound] = []
    webhook, _ = hook_with(received, channel=chan)
    assert not chan.window_open(ANA)
    async with serve(webhook) as client:
        body, headers = signed_request(graph_api.inbound_text(ANA, "hola", at=9_000.0), SECRET)
        await client.post("/webhooks/whatsapp", data=body, headers=headers)
        await webhook.drain()
    await chan.aclose()
    assert chan.window_open(ANA)
    now[0] = 9_000.0 + WINDOW_SECONDS
    assert not chan.window_open(ANA)
    assert not chan.window_open(LUIS)


@pytest.mark.parametrize(
    ("wa_id", "code", "national"),
    [
        ("573001112233", "57", "3001112233"),
        ("+57 300 111 2233", "57", "3001112233"),
        ("5215512345678", "57", "5215512345678"),  # another country: left whole
        ("57", "57", "57"),
        ("14155550100", "1", "4155550100"),
    ],
)
def test_national_number(wa_id: str, code: str, national: str) -> None:
    assert national_number(wa_id, code) == national


# --------------------------------------------------------------------------- secrets


async def test_the_access_token_never_appears_in_logs_or_errors(
    fake: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chan = WhatsAppChannel(make_settings(fake.base_url), max_retries=1, backoff=0.001)
    errors: list[str] = []
    fake.fail(code=130429)
    await chan.send(Outbound(key(), "retried"))
    fake.fail(code=100)
    fake.close_window(LUIS)
    for target in (ANA, LUIS):
        with pytest.raises(DeliveryError) as caught:
            await chan.send(Outbound(key(target), "fails"))
        errors.append(str(caught.value))
    await chan.aclose()
    assert "retrying" in caplog.text  # the failures were logged...
    assert "refused" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in e for e in errors)
    assert TOKEN not in repr(chan)
    assert TOKEN not in repr(make_settings())


async def test_a_graph_message_echoing_the_token_is_scrubbed(
    caplog: pytest.LogCaptureFixture, fake: FakeGraph, channel: WhatsAppChannel
) -> None:
    fake.fail(code=190, status=401, message=f"bad token {TOKEN}")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(Outbound(key(), "hola"))
    assert TOKEN not in str(caught.value)
    assert "bad token ***" in str(caught.value)
    assert TOKEN not in caplog.text


def test_channel_needs_token_and_phone_number_id() -> None:
    with pytest.raises(ValueError, match="WHATSAPP_ACCESS_TOKEN"):
        WhatsAppChannel(make_settings().model_copy(update={"access_token": None}))


async def test_channel_is_a_channel_adapter(channel: WhatsAppChannel) -> None:
    adapter: ChannelAdapter = channel  # mypy checks the protocol here
    assert adapter.name == "whatsapp"
