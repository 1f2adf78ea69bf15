"""National forms of WhatsApp numbers, as WispHub records hold them (libphonenumber)."""

from __future__ import annotations

import pytest

from integrations.wisphub.phones import national_forms, national_number


@pytest.mark.parametrize(
    ("phone", "default_code", "forms"),
    [
        # Mexico: WhatsApp's 521 + 10 digits; the record holds the 10 digits.
        ("+5215512345678", "52", ["5512345678"]),
        ("+525512345678", "52", ["5512345678"]),
        # Argentina: 549 + area + number; area + number first, then with the 9, then with 15.
        ("+5491123456789", "52", ["1123456789", "91123456789", "111523456789"]),
        # Colombia, as before; and a number typed without a country code.
        ("+573001112233", "57", ["3001112233"]),
        ("3001112233", "57", ["3001112233"]),
        # A valid mobile whose first digit is no token (Brazil): never shortened.
        ("+5511912345678", "57", ["11912345678"]),
        # Not a valid number anywhere: the plain national number, as before.
        ("+1 555 123 4567", "57", ["15551234567"]),
    ],
)
def test_national_forms(phone: str, default_code: str, forms: list[str]) -> None:
    assert national_forms(phone, default_code) == forms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+57 300 111 2233", "3001112233"),
        ("573001112233", "3001112233"),
        ("3001112233", "3001112233"),
        ("0057 300-111-2233", "3001112233"),
        ("(601) 444 5566", "6014445566"),
        ("+1 555 123 4567", "15551234567"),
    ],
)
def test_national_number(raw: str, expected: str) -> None:
    assert national_number(raw, "57") == expected
