"""The WhatsApp webhook: signature, handshake, POST handling in order, the window it opens."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.channels.whatsapp.channel import WINDOW_SECONDS, WhatsAppChannel
from bot.channels.whatsapp.webhook import WhatsAppWebhook, verify_signature
from flows.types import Inbound, Kind

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import graph_api
from graph_api import sign, signed_request
from whatsapp_kit import (
    ANA,
    LUIS,
    SECRET,
    VERIFY,
    Hook,
    hook_with,
    key,
    make_settings,
    serve,
)

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


async def test_webhook_opens_the_window_from_the_message_timestamp() -> None:
    now = [10_000.0]
    chan = WhatsAppChannel(make_settings(), clock=lambda: now[0])
    received: list[Inbound] = []
    webhook, _ = hook_with(received, channel=chan)
    assert not await chan.window_open(ANA)
    async with serve(webhook) as client:
        body, headers = signed_request(graph_api.inbound_text(ANA, "hola", at=9_000.0), SECRET)
        await client.post("/webhooks/whatsapp", data=body, headers=headers)
        await webhook.drain()
    await chan.aclose()
    assert await chan.window_open(ANA)
    now[0] = 9_000.0 + WINDOW_SECONDS
    assert not await chan.window_open(ANA)
    assert not await chan.window_open(LUIS)
