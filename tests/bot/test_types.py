"""Outbound's outbox form keeps an agent's file id, and reads outboxes written before it."""

from __future__ import annotations

from flows.types import ConvKey, Media, Outbound

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
