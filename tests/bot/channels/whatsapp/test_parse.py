"""WhatsApp webhook payloads into Inbound events (parse.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from whatsapp_kit import ANA, LUIS, key

from bot.channels.whatsapp.parse import parse_webhook
from flows.types import ConvKey, Inbound, Kind, Media

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import graph_api
from fixtures import fixture

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
