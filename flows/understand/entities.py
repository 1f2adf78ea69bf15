"""Entities in a message: a document number, a date, an amount of money, a phone number.

Every extractor reads the folded text (:func:`flows.understand.normalize.fold`: lower case, no
accents, ASCII digits, punctuation kept). Dates are found by patterns here and resolved by
``dateparser`` against "now" in the ISP's time zone; it runs only when a pattern matched, so a
message without a date costs no parsing.
"""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from functools import lru_cache

import dateparser

Entities = dict[str, str | int | float]

_MONTHS_ES = (
    "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|"
    "diciembre|ene|feb|mar|abr|jun|jul|ago|sep|sept|oct|nov|dic"
)
_MONTHS_EN = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_DAYS_ES = "lunes|martes|miercoles|jueves|viernes|sabado|domingo"
_DAYS_EN = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_NUMERIC = r"\d{1,2}[/-]\d{1,2}(?:[/-]\d{2,4})?"
# "el 15" is a day of the month, "el 15 de megas" or "el 50%" are not.
_NOT_DAYS_ES = (
    "megas?|mb|mbps|gb|mil|k|pesos|soles|dolares|dias|horas|hrs|minutos|min|veces|anos|meses|"
    "semanas|por\\s+ciento"
)

# Each pattern's named group "d" is the phrase handed to dateparser; "rel" marks a phrase
# dateparser does not know, rewritten first.
_DATE_PATTERNS: dict[str, re.Pattern[str]] = {
    "es": re.compile(
        rf"(?<![\w/])(?:"
        rf"(?P<rel>pasado\s+manana)"
        rf"|(?<!esta\s)(?<!la\s)(?<!las\s)(?P<tomorrow>manana)(?!\s+(?:en\s+la|por\s+la)\s+noche\b)"
        rf"|(?P<today>hoy)"
        rf"|(?P<d>(?:\d{{1,2}}|primero)\s+de\s+(?:{_MONTHS_ES})\b(?:\s+(?:de\s+|del\s+)?\d{{4}})?)"
        rf"|(?P<day>{_DAYS_ES})\b"
        rf"|(?P<num>{_NUMERIC})(?![\d/])"
        rf"|(?P<in>en\s+\d{{1,2}}\s+dias)"
        rf"|(?:el\s+dia|el|dia)\s+(?P<dom>\d{{1,2}})(?![\d/.,:-])(?!\s+de\s+(?:{_MONTHS_ES})\b)"
        rf"(?!\s*(?:%|(?:de\s+)?(?:{_NOT_DAYS_ES})\b))"
        rf")"
    ),
    "en": re.compile(
        rf"(?<![\w/])(?:"
        rf"(?P<rel>day\s+after\s+tomorrow)"
        rf"|(?P<tomorrow>tomorrow)"
        rf"|(?P<today>today)"
        rf"|(?P<d>(?:(?:{_MONTHS_EN})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+"
        rf"(?:of\s+)?(?:{_MONTHS_EN}))\b(?:,?\s+\d{{4}})?)"
        rf"|(?P<day>{_DAYS_EN})\b"
        rf"|(?P<num>{_NUMERIC})(?![\d/])"
        rf"|(?P<in>in\s+\d{{1,2}}\s+days)"
        rf"|(?:on\s+the|by\s+the|the)\s+(?P<dom>\d{{1,2}})(?:st|nd|rd|th)\b"
        rf"(?!\s+(?:of\s+)?(?:{_MONTHS_EN})\b)"
        rf")"
    ),
}
_REWRITE = {"pasado manana": "en 2 dias", "day after tomorrow": "in 2 days"}

_DOC_WORDS = (
    r"cc|c\.c\.?|c\.?\s?c|ce|c\.e\.?|ci|c\.i\.?|ti|dni|nit|rut|ruc|rif|cuit|cuil|curp|ine|dui|"
    r"v|e|j|cedula|documento|doc|identificacion|id|no\.?|nro\.?|numero|number|#"
)
_NUMBER = r"\d[\d.\s-]{2,20}\d"
_DOCUMENT = re.compile(rf"(?:(?P<kw>\b(?:{_DOC_WORDS}))\s*[:#.-]?\s*)?(?P<n>{_NUMBER}|\d{{5,12}})")
_PHONE_WORDS = re.compile(
    r"(?:telefono|celular|cel|movil|whatsapp|wasap|wsp|numero\s+de\s+contacto|phone|mobile|"
    r"cell|contact\s+number)\D{0,12}$"
)
_PHONE_PLUS = re.compile(r"\+\s?\d[\d\s().-]{6,18}\d")
_CURRENCY = r"\$|us\$|usd|cop|mxn|clp|ars|pen|s/\.?|bs\.?|bs\.s|eur|€"
_AMOUNT_UNITS = (
    r"pesos|soles|bolivares|bolos|dolares|dollars|bucks|euros|lucas|lukas|mil|k|luquitas|"
    r"quetzales|colones|usd|cop|mxn|clp|ars|pen|bs"
)
_AMOUNT = re.compile(
    rf"(?:(?P<cur>{_CURRENCY})\s*(?P<a>\d[\d.,]*)(?:\s*(?P<mil1>mil|k)\b)?)"
    rf"|(?:\b(?P<b>\d[\d.,]*)\s*(?P<unit>{_AMOUNT_UNITS})\b)"
    rf"|(?:\b(?:pague|pagamos|abone|transferi|consigne|deposite|valor|monto|total|paid|pay|sent|"
    rf"transferred|deposited)\s+(?:de\s+|of\s+)?(?P<c>\d{{1,3}}(?:[.,]\d{{3}})+(?:[.,]\d{{1,2}})?|\d{{4,7}})\b)"
)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def document(folded: str) -> str | None:
    """A document number (5 to 12 digits) as digits only: "1.020.304.050", "CC 1020304050",
    "V-12345678", "1 020 304 050"; numbers given as a phone or an amount are not documents."""
    best: str | None = None
    for match in _DOCUMENT.finditer(folded):
        start = match.start("n")
        before = folded[max(0, start - 30) : start]
        if _PHONE_WORDS.search(before) or folded[max(0, start - 2) : start].strip().endswith("+"):
            continue
        if re.match(rf"\s*(?:{_AMOUNT_UNITS})\b", folded[match.end("n") :]) or re.search(
            rf"(?:{_CURRENCY})\s*$", before
        ):
            continue
        if _DATE_PATTERNS["es"].fullmatch(match.group("n")):
            continue
        for chunk in _chunks(match.group("n")):
            if 5 <= len(chunk) <= 12:
                if match.group("kw"):
                    return chunk
                best = best or chunk
    return best


def _chunks(number: str) -> list[str]:
    """Digits of a number; two numbers written with a space between are two."""
    whole = _digits(number)
    if len(whole) <= 12:
        return [whole]
    return [_digits(part) for part in number.split()]


def phone(folded: str) -> str | None:
    """A phone number as digits (with the country code when one was written with "+")."""
    plus = _PHONE_PLUS.search(folded)
    if plus:
        digits = _digits(plus.group())
        if 8 <= len(digits) <= 15:
            return digits
    for match in re.finditer(r"\d[\d\s().-]{5,16}\d", folded):
        if _PHONE_WORDS.search(folded[max(0, match.start() - 30) : match.start()]):
            digits = _digits(match.group())
            if 7 <= len(digits) <= 15:
                return digits
    return None


def _number(text: str) -> float | None:
    """A typed amount: "89.900" and "89,900" are thousands, "1.500,50" and "15.50" decimals."""
    text = text.strip(".,")
    if not text:
        return None
    seps = [c for c in text if c in ".,"]
    if not seps:
        return float(text)
    last = max(text.rfind("."), text.rfind(","))
    if len(set(seps)) == 2 or len(text) - last - 1 != 3:
        integer, decimals = text[:last], text[last + 1 :]
        return float(_digits(integer) + "." + decimals) if decimals.isdigit() else None
    return float(_digits(text))


def amount(folded: str) -> int | float | None:
    """An amount of money: "$89.900", "50 mil", "20k", "S/ 120", "pagué 45.000"."""
    for match in _AMOUNT.finditer(folded):
        raw = match.group("a") or match.group("b") or match.group("c")
        value = _number(raw) if raw else None
        if value is None:
            continue
        unit = match.group("unit") or match.group("mil1") or ""
        if unit in ("mil", "k", "lucas", "lukas", "luquitas"):
            value *= 1000
        return int(value) if value.is_integer() else round(value, 2)
    return None


@lru_cache(maxsize=1024)
def _resolve(phrase: str, language: str, base: datetime) -> date | None:
    settings = {
        "RELATIVE_BASE": base,
        "PREFER_DATES_FROM": "future",
        "DATE_ORDER": "MDY" if language == "en" else "DMY",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    found = dateparser.parse(phrase, languages=[language], settings=settings)
    return found.date() if found else None


def date_in(folded: str, language: str, now: datetime, tz: tzinfo) -> str | None:
    """The first date the message names, as ``YYYY-MM-DD`` in the ISP's time zone."""
    pattern = _DATE_PATTERNS.get(language, _DATE_PATTERNS["es"])
    base = (now.astimezone(tz) if now.tzinfo else now).replace(tzinfo=None)
    base = base.replace(
        hour=12, minute=0, second=0, microsecond=0
    )  # "mañana" at 23:59 is still tomorrow
    for match in pattern.finditer(folded):
        phrase = re.sub(r"\s+", " ", match.group())
        phrase = _REWRITE.get(phrase, phrase)
        if match.group("num") and not _plausible_numeric(phrase):
            continue
        if match.group("dom"):
            found = _day_of_month(int(match.group("dom")), base.date())
        else:
            found = _resolve(phrase, language, base)
        if found is not None:
            return found.isoformat()
    return None


def _day_of_month(day: int, today: date) -> date | None:
    """The next date with that day of the month ("pago el 15"), today included."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month + (day < today.day)
    for _ in range(3):  # "el 31" in November is the 31st of December
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        try:
            return date(year, month, day)
        except ValueError:
            month += 1
    return None


def _plausible_numeric(phrase: str) -> bool:
    parts = [int(p) for p in re.split(r"[/-]", phrase)[:2]]
    return all(1 <= p <= 31 for p in parts) and min(parts) <= 12


def extract(folded: str, language: str, now: datetime, tz: tzinfo) -> Entities:
    """Every entity found, by name; absent ones are left out."""
    found: Entities = {}
    if any(ch.isdigit() for ch in folded):
        num = amount(folded)
        if num is not None:
            found["amount"] = num
        doc = document(folded)
        if doc is not None and (num is None or doc != _digits(str(num))):  # "pagué 45.000"
            found["document"] = doc
        if (tel := phone(folded)) is not None:
            found["phone"] = tel
    if (day := date_in(folded, language, now, tz)) is not None:
        found["date"] = day
    return found


def warm_up(language: str, tz: tzinfo) -> None:
    """Load dateparser's language data now rather than on a customer's first date."""
    date_in("manana" if language == "es" else "tomorrow", language, datetime.now(tz), tz)
