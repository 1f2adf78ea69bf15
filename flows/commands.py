"""What a typed message names without understanding it: a command ("/menu", "asesor",
"atrás", "/silenciar"), or one of the options the bot offered (pressed, its number, its label or
a typo of it). The dialog (``flows.dialog``) tries these before free-text understanding."""

from __future__ import annotations

import re
from typing import Any

from flows.names import fold
from flows.texts import LANGUAGES, catalogue
from flows.types import Inbound, Kind, Option
from flows.understand import match_option

_LONG_DIGITS = re.compile(r"\d{6,}")
COMMANDS = {
    "start": "start",
    "menu": "menu",
    "cancelar": "cancel",
    "cancel": "cancel",
    "agente": "agent",
    "agent": "agent",
    "asesor": "agent",
    "atras": "back",
    "volver": "back",
    "back": "back",
    "silenciar": "mute",
    "mute": "mute",
    "stop": "mute",
    "avisos": "unmute",
    "notices": "unmute",
    "unmute": "unmute",
}
GLOBAL_OPTIONS = {"agent": "agent", "menu": "menu"}


def _words(key: str) -> frozenset[str]:
    return frozenset(fold(w) for lang in LANGUAGES for w in catalogue(lang)[key])


WORDS = {kind: _words(f"words.{kind}") for kind in ("menu", "agent", "cancel")}
WORDS["back"] = _words("back_words")
WORDS |= {"mute": _words("notice.words_mute"), "unmute": _words("notice.words_unmute")}


def command_of(text: str) -> str | None:
    """A global command typed anywhere: ``/start``, ``/menu``, ``/cancelar``, ``/agente``,
    ``/atras``, and their words."""
    folded = fold(text)
    if text.strip().startswith("/"):
        name = text.strip()[1:].split()[0].split("@")[0].lower() if text.strip()[1:] else ""
        return COMMANDS.get(fold(name))
    for kind, words in WORDS.items():
        if folded in words:
            return kind
    return None


def mask_digits(text: str) -> str:
    """Long numbers (documents, phones) kept only by their last three digits."""
    return _LONG_DIGITS.sub(lambda m: "*" * (len(m[0]) - 3) + m[0][-3:], text)


def match_offered(data: dict[str, Any], lang: str, inbound: Inbound, text: str) -> Option | None:
    """The offered option the customer chose: pressed, typed by label, or by number."""
    offered = [Option(i, label) for i, label in data.get("opts", [])]
    if inbound.kind == Kind.BUTTON and inbound.payload:
        found = next((o for o in offered if o.id == inbound.payload), None)
        return found or Option(inbound.payload, inbound.payload)
    if not text or not offered:
        return None
    number = text.lstrip("#").strip()
    if number.isdigit() and 1 <= int(number) <= len(offered):
        return offered[int(number) - 1]
    folded = fold(text)  # a label's first clause is enough: "no" for "No, sigo sin servicio"
    found = next(
        (o for o in offered if folded in (fold(o.label), fold(o.label.split(",")[0]))), None
    )
    if found is None:  # a typo of a label: "soy clente", "estado d cuenta"
        index = match_option(text, [o.label for o in offered], lang)
        found = offered[index] if index is not None else None
    return found
