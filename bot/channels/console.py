"""The console channel's renderer: a reply as terminal text with numbered options (the chat
command itself, ``python -m bot chat``, is in ``bot/cli.py``)."""

from __future__ import annotations

from flows.types import ConvKey, Outbound

KEY = ConvKey("console", "local")
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


def render(out: Outbound, *, color: bool) -> str:
    """One reply as terminal text with numbered options."""
    bot = f"{_BOLD}bot>{_RESET}" if color else "bot>"
    lines = [
        f"{bot} {line}" if i == 0 else f"     {line}" if line else ""
        for i, line in enumerate(out.text.splitlines() or [""])
    ]
    for n, option in enumerate(out.options, 1):
        lines.append(f"     {_DIM if color else ''}[{n}]{_RESET if color else ''} {option.label}")
    return "\n".join(lines)
