"""Outbound's outbox form keeps an agent's file id, and reads outboxes written before it; an
Inbound's JSON (inbox, journal) keeps every field."""

from __future__ import annotations

import json
from dataclasses import fields

import orjson

from flows.types import ConvKey, Inbound, Kind, Media, Outbound

KEY = ConvKey("whatsapp", "573001112233")
AGENTS = ConvKey("telegram", "-1001234567890")


def test_an_agents_file_id_survives_the_outbox() -> None:
    media = Media("photo", "42", "la factura", file_id="AgAD-f")
    reply = Outbound(KEY, "la factura", media=media, source_key=AGENTS)
    assert Outbound.from_dict(reply.to_dict()) == reply


def test_an_outbox_without_file_ids_reads_as_before() -> None:
    raw: dict[str, object] = {
        "key": str(KEY),
        "text": "",
        "options": [],
        "media": ["photo", "42", "la factura"],
        "source_key": str(AGENTS),
    }
    reply = Outbound.from_dict(raw)
    assert reply.media == Media("photo", "42", "la factura")
    assert reply.to_dict() == raw  # no file id: the same form as before


def test_an_inbound_keeps_every_field_through_its_json() -> None:
    media = Media("photo", "42", "mi módem", file_id="AgAD-f")
    inbound = Inbound(
        KEY, "ev1", Kind.MEDIA, "ñandú", "opt", "+573001112233", "7", "Ana", media=media
    )
    text = inbound.to_json()
    assert Inbound.from_json(text) == inbound
    assert set(orjson.loads(text)) == {f.name for f in fields(Inbound)}  # none forgotten
    assert set(orjson.loads(text)["media"]) == {f.name for f in fields(Media)}


def test_an_inbound_written_by_the_standard_library_reads_the_same() -> None:
    inbound = Inbound(KEY, "ev2", text="hola")
    raw = {f.name: getattr(inbound, f.name) for f in fields(Inbound)}
    written = json.dumps({**raw, "key": str(KEY)}, ensure_ascii=False)  # journals of before
    assert Inbound.from_json(written) == inbound
