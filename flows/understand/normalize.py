"""Text normalisation before understanding: what customers type, folded to what the model knows.

Two levels: :func:`fold` keeps punctuation and digits' separators (the entity extractors read
"1.020.304.050" and "15/12" from it); :func:`normalize` goes on to drop punctuation and emoji,
shorten letter elongations ("holaaaa") and spell out SMS shorthand ("q", "xq", "tmb"), which is
what the classifier and the option matcher see.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Emoji that carry a need of their own become words; every other emoji is dropped.
_EMOJI_WORDS: dict[str, dict[str, str]] = {
    "es": {
        "👍": "si",
        "👌": "ok",
        "✅": "si",
        "👎": "no",
        "❌": "no",
        "🙏": "gracias",
        "👋": "hola",
    },
    "en": {
        "👍": "yes",
        "👌": "ok",
        "✅": "yes",
        "👎": "no",
        "❌": "no",
        "🙏": "thanks",
        "👋": "hi",
    },
}

# Shorthand of SMS and chat, word by word (after folding: no accents, lower case).
_SMS: dict[str, dict[str, str]] = {
    "es": {
        "q": "que",
        "k": "que",
        "ke": "que",
        "qe": "que",
        "xq": "porque",
        "pq": "porque",
        "xk": "porque",
        "porq": "porque",
        "pk": "porque",
        "tmb": "tambien",
        "tb": "tambien",
        "tmbn": "tambien",
        "tbn": "tambien",
        "x": "por",
        "xfa": "por favor",
        "xfavor": "por favor",
        "porfa": "por favor",
        "porfis": "por favor",
        "plis": "por favor",
        "pls": "por favor",
        "d": "de",
        "dl": "del",
        "pa": "para",
        "toy": "estoy",
        "ta": "esta",
        "sta": "esta",
        "bn": "bien",
        "msj": "mensaje",
        "msg": "mensaje",
        "cel": "celular",
        "tel": "telefono",
        "dnd": "donde",
        "cdo": "cuando",
        "kiero": "quiero",
        "qiero": "quiero",
        "aki": "aqui",
        "aca": "aca",
        "salu2": "saludos",
        "grax": "gracias",
        "grs": "gracias",
        "grcs": "gracias",
        "gracia": "gracias",
        "bno": "bueno",
        "dsd": "desde",
        "hrs": "horas",
        "hr": "hora",
        "mins": "minutos",
        "min": "minutos",
        "nd": "nada",
        "nda": "nada",
        "tons": "entonces",
        "ntons": "entonces",
        "ps": "pues",
        "pos": "pues",
        "weno": "bueno",
        "ola": "hola",
        "ntp": "no te preocupes",
        "info": "informacion",
        "inter": "internet",
        "interne": "internet",
        "intenet": "internet",
        "internt": "internet",
        "yap": "ya",
        "sip": "si",
        "nop": "no",
        "nel": "no",
        "simon": "si",
        "vdd": "verdad",
        "fact": "factura",
        "wifi": "wifi",
        "uds": "ustedes",
        "ud": "usted",
        "mñn": "manana",
        "mna": "manana",
    },
    "en": {
        "u": "you",
        "ur": "your",
        "r": "are",
        "pls": "please",
        "plz": "please",
        "thx": "thanks",
        "thnx": "thanks",
        "tnx": "thanks",
        "ty": "thank you",
        "tysm": "thank you",
        "idk": "i do not know",
        "b4": "before",
        "2day": "today",
        "2moro": "tomorrow",
        "2morrow": "tomorrow",
        "tmrw": "tomorrow",
        "tmr": "tomorrow",
        "tmw": "tomorrow",
        "msg": "message",
        "acct": "account",
        "acc": "account",
        "pymt": "payment",
        "bc": "because",
        "bcz": "because",
        "cuz": "because",
        "coz": "because",
        "cos": "because",
        "w": "with",
        "wanna": "want to",
        "gonna": "going to",
        "gotta": "have to",
        "im": "i am",
        "cant": "can not",
        "dont": "do not",
        "doesnt": "does not",
        "isnt": "is not",
        "wont": "will not",
        "didnt": "did not",
        "aint": "is not",
        "ive": "i have",
        "ya": "you",
        "yea": "yes",
        "yeah": "yes",
        "yep": "yes",
        "yup": "yes",
        "nope": "no",
        "nah": "no",
        "k": "ok",
        "kk": "ok",
        "okay": "ok",
        "okey": "ok",
        "hiya": "hi",
        "hey": "hi",
        "hii": "hi",
        "heyy": "hi",
        "internt": "internet",
        "intenet": "internet",
        "wi": "wi",
        "pwd": "password",
        "asap": "as soon as possible",
        "noo": "no",
        "soo": "so",
        "yess": "yes",
        "rn": "right now",
        "info": "information",
    },
}
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\u00ad\u061c\u180e]")
_ELONGATED = re.compile(r"([a-z])\1{2,}")
_LAUGH = re.compile(r"\b(?:[jh][aeiou]){2,}[jh]?\b|\b(?:js){2,}j?\b")
_NOT_WORD = re.compile(r"[^a-z0-9ñ]+")
_SPACES = re.compile(r"\s+")


_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def _ascii_digit(match: re.Match[str]) -> str:
    return str(unicodedata.decimal(match.group()))


def fold(text: str) -> str:
    """Unicode-compatible, lower case, no accents, no invisible or control characters;
    other scripts' digits read as ASCII; punctuation kept."""
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text)
    text = _CONTROL.sub(" ", text)
    text = _MARKS.sub("", unicodedata.normalize("NFD", text.casefold()))
    return _OTHER_DIGIT.sub(_ascii_digit, text) if not text.isascii() else text


def _emoji_to_words(text: str, language: str) -> str:
    words = _EMOJI_WORDS.get(language, _EMOJI_WORDS["es"])
    return "".join(f" {words[ch]} " if ch in words else ch for ch in text)


def _shorten_es(match: re.Match[str]) -> str:
    return match.group(1)  # "holaaaa", "siiii", "graciasss": Spanish doubles are rare


def _shorten_en(match: re.Match[str]) -> str:
    ch = match.group(1)
    return ch * 2 if ch in "eo" else ch  # "goood", "seee": English doubles are spelling


@lru_cache(maxsize=4096)
def normalize(text: str, language: str = "es") -> str:
    """The words a message says: folded, no punctuation or emoji, elongations shortened,
    SMS shorthand spelled out, single spaces."""
    folded = fold(_emoji_to_words(text, language))
    folded = _ELONGATED.sub(_shorten_en if language == "en" else _shorten_es, folded)
    folded = _NOT_WORD.sub(" ", folded)
    folded = _LAUGH.sub("jaja", folded)
    sms = _SMS.get(language, _SMS["es"])
    words = [sms.get(w, w) for w in folded.split()]
    return _SPACES.sub(" ", " ".join(words)).strip()


def has_letters(text: str) -> bool:
    """Whether a normalised text says anything in words."""
    return any(ch.isalpha() for ch in text)
