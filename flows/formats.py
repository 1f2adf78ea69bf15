"""Money and dates as the customer reads them, by Babel (CLDR) from the language and the ISP's
``CURRENCY`` and ``LOCALE``.

The conversation's language picks the locale: ``LOCALE`` itself when it is of that language,
else the same country in that language when CLDR knows it (``en_US`` for English with
``LOCALE=es_US``), else the bare language (``en``: an English reader sees ``COP 89,900``, never a
``$`` that reads as dollars). Two things are ours, not CLDR's: amounts round half up, as people
round money; and a currency sign written before the number is separated by a space in Spanish
(the RAE's rule, and how Latin-American ISPs write bills: ``$ 89.900``) and whenever the sign is
a code (``COP 89,900``). Formatters are built once per (currency, locale, language, decimals)
and recent amounts and dates are remembered: a reply formats the same few over and over.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import NumberPattern, get_currency_symbol, parse_pattern


@lru_cache(maxsize=64)
def locale_for(lang: str, locale: str) -> Locale:
    """The Babel locale of a conversation in ``lang`` for an ISP configured with ``locale``."""
    base = Locale.parse(locale)
    if base.language == lang:
        return base
    if base.territory:
        try:
            return Locale(lang, base.territory)
        except UnknownLocaleError:
            pass
    return Locale(lang)


@lru_cache(maxsize=64)
def _money_format(
    currency: str, locale: str, lang: str, decimals: int
) -> tuple[Locale, NumberPattern]:
    loc = locale_for(lang, locale)
    # A copy: the locale's parsed pattern is shared by everyone who formats with it.
    pattern = copy.copy(parse_pattern(loc.currency_formats["standard"].pattern))
    pattern.frac_prec = (decimals, decimals)
    symbol = get_currency_symbol(currency, loc)
    if lang == "es" or symbol.isalpha():
        pattern.prefix = tuple(p[:-1] + "¤ " if p.endswith("¤") else p for p in pattern.prefix)  # type: ignore[assignment]
    return loc, pattern


@lru_cache(maxsize=4096)
def money(
    amount: Decimal | float | int, currency: str, locale: str, lang: str, decimals: int
) -> str:
    """An amount of ``currency`` as a reader of ``lang`` (default: the locale's) expects it."""
    lang = lang or Locale.parse(locale).language
    loc, pattern = _money_format(currency, locale, lang, decimals)
    value = Decimal(str(amount)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    value = value if value else value.copy_abs()  # -0.4 rounds to 0, never "-$ 0"
    return str(pattern.apply(value, loc, currency=currency, currency_digits=False))


@lru_cache(maxsize=4096)
def long_date(day: date, lang: str, locale: str) -> str:
    """``26 de noviembre de 2026`` / ``November 26, 2026``."""
    return format_date(day, "long", locale=locale_for(lang, locale))


@lru_cache(maxsize=4096)
def weekday(day: date, lang: str, locale: str) -> str:
    """The day of the week, capitalised as a label starts: ``Jueves`` / ``Thursday``."""
    name = format_date(day, "EEEE", locale=locale_for(lang, locale))
    return name[:1].upper() + name[1:]


@dataclass(frozen=True, slots=True)
class Money:
    """How the ISP's amounts are written: ``CURRENCY`` (ISO code), ``LOCALE``, decimals."""

    currency: str = "COP"
    locale: str = "es_CO"
    decimals: int = 0

    def __call__(self, amount: Decimal | float | int, lang: str | None = None) -> str:
        """Format an amount for a reader of ``lang`` (default: the locale's language)."""
        return money(amount, self.currency, self.locale, lang or "", self.decimals)


def warm_up(fmt: Money, languages: tuple[str, ...]) -> None:
    """Load Babel's locale data now rather than in a customer's first reply."""
    for lang in languages:
        fmt(0, lang)
        long_date(date(2000, 1, 1), lang, fmt.locale)
        weekday(date(2000, 1, 1), lang, fmt.locale)
