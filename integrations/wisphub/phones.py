"""A customer's phone number in the national forms a WispHub record may hold.

WhatsApp gives international numbers (``573001112233``); WispHub records hold what the ISP
typed, usually the national number (``3001112233``). Some countries' WhatsApp numbers carry a
mobile token that their national number does not: Argentine mobiles come as ``549`` + area +
number (the ``9`` is libphonenumber's mobile token for Argentina), Mexican ones as ``521`` + 10
digits (a ``1`` that Mexico dropped in 2019 and libphonenumber no longer accepts, while WhatsApp
still sends it). Parsing and validity come from ``phonenumbers`` (Google's libphonenumber); a
form is offered only when libphonenumber holds it valid, so no country's rule is written here.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

# Phone numbers shorter than this would make ``telefono__contains`` match half the ISP.
MIN_PHONE_DIGITS = 7


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def national_number(phone: str, country_code: str = "57") -> str:
    """``+57 300 111 2233`` → ``3001112233``: drop symbols, spaces and the country code."""
    raw = phone.strip()
    number = _digits(raw)
    international = raw.startswith("+") or number.startswith("00")
    number = number.removeprefix("00") if number.startswith("00") else number
    cc = _digits(country_code)
    # Strip the code when the number is written internationally, or when it is too long to be
    # a national number of its own (WhatsApp gives ``573001112233`` without the plus).
    if (
        cc
        and number.startswith(cc)
        and len(number) - len(cc) >= MIN_PHONE_DIGITS
        and (international or len(number) > 10)
    ):
        number = number[len(cc) :]
    return number


def _parse(phone: str, country_code: str) -> PhoneNumber | None:
    raw = phone.strip()
    number = _digits(raw)
    cc = _digits(country_code)
    if raw.startswith("+") or number.startswith("00"):
        text = "+" + number.removeprefix("00")
    elif cc and number.startswith(cc) and len(number) > 10:  # WhatsApp's wa_id has no plus
        text = "+" + number
    else:
        text = number
    region = phonenumbers.region_code_for_country_code(int(cc)) if cc else "ZZ"
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException:
        return None


def _valid(country_code: int, national: str) -> bool:
    if not national.isdigit():
        return False
    number = PhoneNumber(country_code=country_code, national_number=int(national))
    return bool(phonenumbers.is_valid_number(number))


def national_forms(phone: str, country_code: str = "57") -> list[str]:
    """The national forms of ``phone`` to search WispHub with, the likeliest first.

    ``country_code`` (``DEFAULT_COUNTRY_CODE``) is the country of a number written without
    one. Without the mobile token first (what an ISP types), then the national significant
    number, then the national format's digits (Argentina's area + ``15`` + number). A number
    libphonenumber cannot read gives the plain national number, as before.
    """
    parsed = _parse(phone, country_code)
    if parsed is None or parsed.country_code is None:
        return [national_number(phone, country_code)]
    cc = parsed.country_code
    nsn = phonenumbers.national_significant_number(parsed)
    forms: list[str] = []
    token = phonenumbers.country_mobile_token(cc)
    valid = _valid(cc, nsn)
    if (token and nsn.startswith(token)) or not valid:
        # Argentina's 9; or a token libphonenumber no longer knows (Mexico's 1): only when
        # what is left is a valid number of that country.
        rest = nsn[len(token) :] if token and nsn.startswith(token) else nsn[1:]
        if rest and rest[0] != "0" and _valid(cc, rest):
            forms.append(rest)
    if valid:
        forms.append(nsn)
        national = _digits(phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL))
        region = phonenumbers.region_code_for_number(parsed)
        trunk = phonenumbers.ndd_prefix_for_region(region, True) if region else None
        forms.append(national.removeprefix(trunk) if trunk else national)
    if not forms:
        forms.append(national_number(phone, country_code))
    unique = list(dict.fromkeys(f for f in forms if len(f) >= MIN_PHONE_DIGITS))
    return unique or [national_number(phone, country_code)]
