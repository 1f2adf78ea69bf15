"""Understanding as the dialog will use it: intents with regional Spanish, entities, doubt."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from flows.understand import Understanding
from tests.understand.conftest import NOW


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # "Cancelar la factura" pays it; "cancelar el servicio" ends it.
        ("ya cancelé la factura del mes", "payment_report"),
        ("dónde puedo cancelar la factura?", "payment_methods"),
        ("quiero cancelar el servicio de internet", "cancel_service"),
        ("no me anda el internet", "fault_no_internet"),
        ("no me jala nada", "fault_no_internet"),
        ("se cayó el internet", "fault_no_internet"),
        ("no carga ninguna página", "fault_no_internet"),
        ("cuánta plata debo", "account"),
        ("ya pagué, reconéctenme", "payment_report"),
        ("se corta a cada ratito", "fault_intermittent"),
        ("va re lento todo", "fault_slow"),
    ],
)
def test_regional_spanish(understanding: Understanding, text: str, intent: str) -> None:
    assert understanding.understand(text, "es", now=NOW).intent == intent


def test_english(understanding: Understanding) -> None:
    result = understanding.understand("I'll pay next Friday, please don't cut me off", "en", NOW)
    assert result.intent == "payment_promise"
    assert result.entities == {"date": "2026-11-27"}


def test_a_promise_carries_its_date(understanding: Understanding) -> None:
    result = understanding.understand("no me corten, pago el viernes", "es", now=NOW)
    assert (result.intent, result.entities) == ("payment_promise", {"date": "2026-11-27"})
    assert 0 < result.confidence <= 1


def test_a_bare_document_number_is_a_document(understanding: Understanding) -> None:
    result = understanding.understand("1.020.304.050", "es", now=NOW)
    assert (result.intent, result.confidence) == ("document", 1.0)
    assert result.entities == {"document": "1020304050"}
    typed = understanding.understand("mi cédula es V-12345678", "es", now=NOW)
    assert (typed.intent, typed.entities) == ("document", {"document": "12345678"})


@pytest.mark.parametrize("text", ["", "   ", "😀🎉", "???", "\u200b"])
def test_nothing_in_words_is_out_of_scope(understanding: Understanding, text: str) -> None:
    result = understanding.understand(text, "es", now=NOW)
    assert not result.understood
    assert result.intent == "out_of_scope"


def test_a_close_second_intent_is_offered(understanding: Understanding) -> None:
    # Two needs in one breath: the runner-up comes back for "¿Te refieres a A o a B?".
    result = understanding.understand("ya pagué y no tengo internet", "es", now=NOW)
    assert {result.intent, *(i for i, _ in result.alternatives)} == {
        "payment_report",
        "fault_no_internet",
    }
    _, score = result.alternatives[0]
    assert 0 < score <= result.confidence
    clear = understanding.understand("quiero hablar con un asesor", "es", now=NOW)
    assert clear.intent == "agent"
    assert clear.alternatives == ()


def test_json_line_shape(understanding: Understanding) -> None:
    line = understanding.understand("CC 1020304050", "es", now=NOW).as_json()
    assert set(line) == {"text", "intent", "confidence", "entities"}
    assert line["text"] == "CC 1020304050"
    assert 0 <= line["confidence"] <= 1


def test_metrics_the_dialog_will_count() -> None:
    from bot.metrics import INTENTS, NOT_UNDERSTOOD, REGISTRY, count_understanding

    before = REGISTRY.get_sample_value("wispbot_not_understood_total") or 0
    count_understanding("plans", understood=True)
    count_understanding("out_of_scope", understood=False)
    assert (REGISTRY.get_sample_value("wispbot_intents_total", {"intent": "plans"}) or 0) >= 1
    assert REGISTRY.get_sample_value("wispbot_not_understood_total") == before + 1
    assert INTENTS._name == "wispbot_intents"
    assert NOT_UNDERSTOOD._name == "wispbot_not_understood"


def test_the_layer_imports_nothing_from_the_runtime() -> None:
    code = (
        "import sys, flows.understand, flows.understand.evaluate\n"
        "print(sorted(m for m in sys.modules if m == 'bot' or m.startswith('bot.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_huge_or_odd_message_is_answered(understanding: Understanding) -> None:
    huge = "no tengo internet " + "ñ\u200b😀\x00x" * 200_000
    assert understanding.understand(huge, "es", now=NOW).intent == "fault_no_internet"
    for odd in ["\ud800", "\U0010ffff", "١٢٣", "🏳️‍🌈" * 50, "\t\n\r", "a" * 5000]:
        result = understanding.understand(odd, "es", now=NOW)
        assert result.intent in {"out_of_scope", "document", *understanding.models["es"].classes}


def test_a_text_seen_before_is_understood_alike_and_its_date_is_todays(
    understanding: Understanding,
) -> None:
    """The classifier's verdict on a text is kept; the entities are read again, so "mañana"
    is tomorrow of the day the message comes, not of the day it was first seen."""
    first = understanding.understand("quiero pagar mañana", "es", NOW)
    again = understanding.understand("quiero pagar mañana", "es", NOW + timedelta(days=3))
    assert (again.intent, again.confidence) == (first.intent, first.confidence)
    assert first.entities["date"] == (NOW + timedelta(days=1)).date().isoformat()
    assert again.entities["date"] == (NOW + timedelta(days=4)).date().isoformat()
    understanding.forget()
    assert understanding.understand("quiero pagar mañana", "es", NOW) == first
