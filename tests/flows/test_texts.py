"""The Spanish and English catalogues stay in step, and every key the code asks for exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from bot.channels.telegram.parse import _MEDIA_TYPES as TELEGRAM_MEDIA
from bot.channels.whatsapp.parse import MEDIA_TYPES as WHATSAPP_MEDIA
from flows.client import CLIENT_OPTIONS
from flows.fault import CATEGORIES
from flows.main import PUBLIC_OPTIONS
from flows.names import fold
from flows.route import ASKABLE
from flows.texts import LANGUAGES, MissingText, Texts, catalogue, placeholders
from integrations.wisphub.models import PingResult

ROOT = Path(__file__).parents[2]
SOURCES = sorted([*(ROOT / "flows").rglob("*.py"), *(ROOT / "bot").rglob("*.py")])

# conv.t("key"), t("key"), notes("key"), self.notes("key"), conv.t.raw("key")
LITERAL = re.compile(r"(?:\bt|\bnotes|\.raw)\(\s*\"([a-z_][a-z0-9_.]*)\"")
# conv.t(f"opt.{...}") and the like: the part before the first brace
PREFIXED = re.compile(r"(?:\bt|\bnotes|\.raw)\(\s*f\"([a-z_.]*)\{")
# conv.opts("agent", "menu")
OPTS = re.compile(r"\bopts\(([^)]*)\)")

ES, EN = catalogue("es"), catalogue("en")


def _source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in SOURCES)


def test_the_sources_are_found() -> None:
    """The scan below reads the real code (an empty scan would prove nothing)."""
    assert any(p.name == "engine.py" for p in SOURCES)
    assert len(LITERAL.findall(_source())) > 50


def test_both_catalogues_have_the_same_keys() -> None:
    """A key in one language only would crash the other language's conversation."""
    assert sorted(set(ES) - set(EN)) == []
    assert sorted(set(EN) - set(ES)) == []


@pytest.mark.parametrize("key", sorted(ES))
def test_same_placeholders_in_both_languages(key: str) -> None:
    """A text formatted with the Spanish placeholders must format in English too."""
    es, en = ES[key], EN[key]
    assert type(es) is type(en), key
    if isinstance(es, str):
        assert placeholders(es) == placeholders(en), key
    elif isinstance(es, dict):  # wh_status: WispHub labels translated, the same labels in both
        assert sorted(es) == sorted(en), key
    elif key == "weekdays":
        assert len(es) == len(en) == 7


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_text_formats_with_its_placeholders(lang: str) -> None:
    """No stray brace or positional field: each text formats with its own names filled."""
    for key, value in catalogue(lang).items():
        if isinstance(value, str):
            filled = value.format(**dict.fromkeys(placeholders(value), "X"))
            assert "{" not in filled, f"{lang}:{key}"


def test_every_literal_key_in_the_code_exists() -> None:
    """Each ``t("key")`` / ``notes("key")`` / ``raw("key")`` names a catalogue entry."""
    used = set(LITERAL.findall(_source()))
    assert sorted(k for k in used if k not in ES) == []


def test_every_computed_key_prefix_is_covered() -> None:
    """Keys built with f-strings use only the prefixes the next test checks exhaustively."""
    assert set(PREFIXED.findall(_source())) <= {
        "opt.",
        "tip.",
        "ping.",
        "agent_media.",
        "free.intent.",
    }


# What the channels' adapters name a customer's attachment, a shared contact, and anything else.
MEDIA_TYPES = (*TELEGRAM_MEDIA, *WHATSAPP_MEDIA.values(), "voice", "contact", "other")


def test_every_computed_key_exists() -> None:
    """Option labels, one tip per fault category, one sentence per ping verdict."""
    offered = {i for group in OPTS.findall(_source()) for i in re.findall(r'"([a-z_]+)"', group)}
    option_ids = offered | set(PUBLIC_OPTIONS) | set(CLIENT_OPTIONS) | set(CATEGORIES)
    statuses = get_args(PingResult.model_fields["status"].annotation)
    keys = (
        [f"opt.{i}" for i in option_ids]
        + [f"tip.{c}" for c in CATEGORIES]
        + [f"ping.{s}" for s in statuses]
        + [f"words.{w}" for w in ("menu", "agent", "cancel")]
        + [f"agent_media.{m}" for m in MEDIA_TYPES]
        + [f"free.intent.{i}" for i in ASKABLE]
    )
    assert len(statuses) == 4
    for lang in LANGUAGES:
        assert sorted(k for k in keys if k not in catalogue(lang)) == [], lang


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize(
    "menu",
    [PUBLIC_OPTIONS, CLIENT_OPTIONS, CATEGORIES, ("fixed", "still"), ("confirm", "cancel")],
    ids=["public", "client", "categories", "selfhelp", "confirm"],
)
def test_labels_of_one_menu_are_distinct_when_typed(lang: str, menu: tuple[str, ...]) -> None:
    """Typed answers match labels after folding case and accents, so they must stay distinct."""
    t = Texts(lang)
    labels = [fold(t(f"opt.{i}")) for i in menu]
    assert len(set(labels)) == len(labels)


def test_a_missing_key_is_a_clear_error() -> None:
    """Asking for a key that does not exist names the language and the key."""
    with pytest.raises(MissingText, match="en:no_such_key"):
        Texts("en")("no_such_key")
