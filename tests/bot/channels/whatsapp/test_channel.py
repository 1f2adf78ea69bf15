"""The WhatsApp channel against a local fake Graph API: rendering, retries, errors, media, the window."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.channels.base import ChannelAdapter, DeliveryError, WindowClosed, split_text
from bot.channels.whatsapp.channel import WINDOW_SECONDS, WhatsAppChannel, window_open_at
from bot.channels.whatsapp.render import TEXT_LIMIT
from flows.types import ConvKey, Inbound, Media, Option, Outbound

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import graph_api
from fixtures import fixture
from graph_api import FakeGraph, running_fake_graph, signed_request
from whatsapp_kit import (
    ANA,
    LUIS,
    SECRET,
    TOKEN,
    hook_with,
    key,
    make_settings,
    options,
    serve,
)

SHAPES = fixture("whatsapp/real_shapes.yaml")
BSUID = SHAPES["username_text"]["contacts"][0]["user_id"]


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
    pieces = split_text("x" * 9000, TEXT_LIMIT)
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
    await channel.note_inbound(ANA, time.time())  # the customer wrote: the window is open again
    await channel.send(Outbound(key(), "Hola de nuevo"))
    assert len(fake.messages_to(ANA)) == 1


async def test_a_window_that_expired_in_this_process_is_refused_without_a_call(
    fake: FakeGraph,
) -> None:
    now = [50_000.0]
    chan = WhatsAppChannel(make_settings(fake.base_url), clock=lambda: now[0])
    try:
        await chan.note_inbound(ANA, 50_000.0)
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
