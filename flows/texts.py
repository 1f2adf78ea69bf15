"""Message catalogues: ``flows/texts/{es,en}.yaml``, loaded once, looked up by dotted key."""

from __future__ import annotations

import datetime as dt
import string
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from flows.formats import long_date, weekday

LANGUAGES = ("es", "en")
_DIR = Path(__file__).parent / "texts"


class MissingText(KeyError):
    """A catalogue has no text under that key."""


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "wh_status":
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


@cache
def catalogue(lang: str) -> dict[str, Any]:
    """The flattened catalogue of one language (``opt.client`` → ``"Soy cliente"``)."""
    if lang not in LANGUAGES:
        lang = LANGUAGES[0]
    with (_DIR / f"{lang}.yaml").open(encoding="utf-8") as fh:
        return _flatten(yaml.safe_load(fh))


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a text expects."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class Texts:
    """One language's texts, formatted with keyword arguments."""

    def __init__(self, lang: str, locale: str = "es_CO") -> None:
        self.lang = lang if lang in LANGUAGES else LANGUAGES[0]
        self.locale = locale  # the ISP's LOCALE: dates in this language for that country
        self._cat = catalogue(self.lang)

    def __call__(self, key: str, **values: object) -> str:
        """The text under ``key`` with its placeholders filled."""
        try:
            raw = self._cat[key]
        except KeyError as err:
            raise MissingText(f"{self.lang}:{key}") from err
        return str(raw).format(**values) if values else str(raw)

    def raw(self, key: str) -> Any:
        """A non-string catalogue value (lists such as weekday names or trigger words)."""
        try:
            return self._cat[key]
        except KeyError as err:
            raise MissingText(f"{self.lang}:{key}") from err

    def date(self, day: dt.date | None) -> str:
        """A date in words (Babel): ``5 de diciembre de 2026``; ``-`` when unknown."""
        return "-" if day is None else long_date(day, self.lang, self.locale)

    def weekday(self, day: dt.date) -> str:
        """The day of the week as a label starts: ``Jueves`` / ``Thursday``."""
        return weekday(day, self.lang, self.locale)

    def status(self, value: str) -> str:
        """A WispHub status label in this language (unknown labels pass through)."""
        table = self._cat.get("wh_status", {})
        return str(table.get(value.strip().lower(), value)) if value else "-"
