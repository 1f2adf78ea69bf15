"""One reply, one bubble, on Telegram: ``python -m bot run`` against the fake Bot API sends a
turn's texts as ONE ``sendMessage`` with the options as its inline keyboard (issue 14).

Each turn's window is checked only after the customer's next move was answered: one
conversation is handled one event at a time, in order, so nothing of an earlier turn can still
arrive by then.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2e_harness import BotProcess, Chat, fold
from telegram_api import FakeTelegram, Sent

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA = ("1020304050", "ana maria ruiz")  # service 10: active, Hogar 50 Mbps at $ 89.900
NewChat = Callable[..., Chat]


def labels(message: Sent) -> list[str]:
    """The inline keyboard's labels, folded."""
    return [fold(b["text"]) for b in message.buttons]


async def test_a_turn_is_one_message_with_its_keyboard(
    bot: BotProcess, new_chat: NewChat, fake: FakeTelegram
) -> None:
    """Greeting + menu, then an answer + the client menu: one sendMessage each, keyboard on it."""
    chat = new_chat()
    windows: list[tuple[str, int]] = []

    async def move(what: str, send: Callable[[], object], pattern: str) -> None:
        send()
        windows.append((what, chat.start))
        await chat.expect(pattern)

    await move("greeting", lambda: chat.say("/start"), "Soy cliente")
    await move("document question", lambda: chat.press("Soy cliente"), "documento")
    await move("name question", lambda: chat.say(ANA[0]), "nombre")
    await move("verified + client menu", lambda: chat.say(ANA[1]), "Estado de cuenta")
    await move("account + client menu", lambda: chat.press("Estado de cuenta"), r"89\.900")
    # A last move, answered: every window above is complete now.
    await move("menu", lambda: chat.say("/menu"), "Estado de cuenta")

    sent = chat.messages()
    ends = [start for _, start in windows[1:]]
    for (what, start), end in zip(windows[:-1], ends, strict=True):
        window = sent[start:end]
        assert len(window) == 1, f"{what}: {len(window)} messages\n{chat.transcript()}"
    greeting, _, _, verified, account = (sent[start] for _, start in windows[:-1])
    # The greeting's text and the menu's prompt share the bubble that carries the keyboard.
    assert "soy cliente" in labels(greeting)
    assert "\n\n" in (greeting.text or ""), greeting.text
    assert "estado de cuenta" in labels(verified)
    assert "ana" in fold(verified.text or "")
    # The answer (the account) and the client menu: one message, the menu's keyboard on it.
    assert "89.900" in (account.text or "")
    assert "estado de cuenta" in labels(account)
    # And one Bot API send per turn: no retried or refused sendMessage either.
    to_chat = [
        c for c in fake.calls_to("sendMessage") if str(c.params.get("chat_id")) == str(chat.id)
    ]
    assert len(to_chat) == len(sent) == len(windows), chat.transcript()
