"""Entities read from messages: every documented form, dates against a fixed now in Bogotá."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from flows.understand.entities import extract
from flows.understand.normalize import fold
from tests.understand.conftest import BOGOTA, NOW


def entities(text: str, language: str = "es", now: datetime = NOW) -> dict[str, object]:
    return dict(extract(fold(text), language, now, BOGOTA))


@pytest.mark.parametrize(
    "text",
    [
        "1.020.304.050",
        "CC 1020304050",
        "cc: 1020304050",
        "1 020 304 050",
        "mi cédula es 1020304050",
        "١٠٢٠٣٠٤٠٥٠",
        "１０２０３０４０５０",
        "C.C. 1.020.304.050",
    ],
)
def test_document_forms(text: str) -> None:
    assert entities(text)["document"] == "1020304050"


def test_venezuelan_and_other_prefixed_documents() -> None:
    assert entities("V-12345678")["document"] == "12345678"
    assert entities("mi cédula es E-84123456")["document"] == "84123456"
    assert entities("DNI 45678912")["document"] == "45678912"
    assert entities("my ID is 52.123.456", "en")["document"] == "52123456"


def test_numbers_that_are_not_documents() -> None:
    assert "document" not in entities("tengo 50 megas")
    assert "document" not in entities("pagué $89.900")
    assert "document" not in entities("mi celular es 300 123 4567")
    assert "document" not in entities("el ticket 4711")


@pytest.mark.parametrize(
    ("text", "language", "day"),
    [
        ("puedo pagar mañana", "es", "2026-11-26"),
        ("pago el viernes", "es", "2026-11-27"),
        ("el lunes", "es", "2026-11-30"),
        ("el 15/12", "es", "2026-12-15"),
        ("pago el 5 de diciembre", "es", "2026-12-05"),
        ("el 2 de enero", "es", "2027-01-02"),
        ("pasado mañana", "es", "2026-11-27"),
        ("hoy mismo", "es", "2026-11-25"),
        ("next Friday", "en", "2026-11-27"),
        ("tomorrow", "en", "2026-11-26"),
        ("on December 5th", "en", "2026-12-05"),
        ("12/15", "en", "2026-12-15"),
        ("the day after tomorrow", "en", "2026-11-27"),
        # A day of the month alone is its next occurrence.
        ("pago el 30", "es", "2026-11-30"),
        ("pago el 15", "es", "2026-12-15"),
        ("el día 3", "es", "2026-12-03"),
        ("el 31 sin falta", "es", "2026-12-31"),  # November has no 31st
        ("on the 15th", "en", "2026-12-15"),
    ],
)
def test_dates_resolve_against_now_in_the_isp_time_zone(text: str, language: str, day: str) -> None:
    assert entities(text, language)["date"] == day


def test_tomorrow_is_counted_in_the_isp_time_zone_not_utc() -> None:
    # 23:30 in Bogotá is already the next day in UTC: "mañana" is still Bogotá's tomorrow.
    late = datetime(2026, 11, 25, 23, 30, tzinfo=BOGOTA).astimezone(ZoneInfo("UTC"))
    assert entities("te pago mañana", now=late)["date"] == "2026-11-26"


@pytest.mark.parametrize(
    "text",
    ["el 50% de la velocidad", "el plan de 50 megas", "el 100", "the 50 plan", "el 30 por ciento"],
)
def test_numbers_that_are_not_days(text: str) -> None:
    assert "date" not in entities(text, "en" if text.startswith("the") else "es")


def test_morning_is_not_tomorrow() -> None:
    assert "date" not in entities("desde esta mañana no tengo internet")
    assert "date" not in entities("se cae por la mañana")


def test_amounts() -> None:
    assert entities("ya pagué $89.900")["amount"] == 89900
    assert entities("pagué 50 mil")["amount"] == 50000
    assert entities("transferí 45.000 ayer")["amount"] == 45000
    assert entities("S/ 120 por yape")["amount"] == 120
    assert entities("I paid $89.90", "en")["amount"] == 89.9
    assert entities("pagué 1.500,50 pesos")["amount"] == 1500.5


def test_phones() -> None:
    assert entities("mi celular es 300 123 4567")["phone"] == "3001234567"
    assert entities("escríbanme al +57 300 123 4567")["phone"] == "573001234567"
    assert entities("call me at +1 (555) 123-4567", "en")["phone"] == "15551234567"
    assert "phone" not in entities("CC 1020304050")


def test_several_entities_in_one_message() -> None:
    found = entities("ya pagué $89.900 el lunes, mi cédula es 1020304050")
    assert found == {"amount": 89900, "document": "1020304050", "date": "2026-11-30"}
