"""Telegram ingress: long polling and webhook dispatch, against the fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from telegram_api import FakeTelegram

from bot.channels.base import AgentMessage
from bot.channels.telegram.channel import TelegramChannel
from bot.channels.telegram.ingress import (
    MAX_FETCHES_UNPLACED,
    TelegramPolling,
    dispatch_update,
)
from bot.channels.telegram.parse import (
    BadUpdate,
    parse_update,
)
from flows.types import ConvKey, Inbound, Kind

CHAT = 1001
KEY = ConvKey("telegram", str(CHAT))


def private_message(**fields: Any) -> dict[str, Any]:
    message = {
        "message_id": 7,
        "date": 1_700_000_000,
        "chat": {"id": CHAT, "type": "private", "first_name": "Ana"},
        "from": {"id": CHAT, "is_bot": False, "first_name": "Ana"},
    }
    message.update(fields)
    return message


class Sinks:
    """Records what the channel hands to the runtime."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.events: list[Inbound | AgentMessage] = []
        self.done = asyncio.Event()

    async def inbound(self, event: Inbound) -> None:
        self._add(event)

    async def agent(self, event: AgentMessage) -> None:
        self._add(event)

    def _add(self, event: Inbound | AgentMessage) -> None:
        self.events.append(event)
        if len(self.events) >= self.want:
            self.done.set()


async def test_a_quick_button_press_is_answered_and_dispatched(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    raw = fake.user_press(CHAT, "ab12.plans", 1)
    await dispatch_update(parse_update(raw, channel.bot), channel, sinks.inbound, sinks.agent)
    [event] = sinks.events
    assert isinstance(event, Inbound)
    assert (event.kind, event.payload) == (Kind.BUTTON, "plans")
    [answered] = fake.calls_to("answerCallbackQuery")
    assert answered.params["callback_query_id"] == raw["callback_query"]["id"]


async def test_polling_delivers_updates_in_order_and_stops_cleanly(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=4)
    polling = TelegramPolling(channel, on_inbound=sinks.inbound, on_agent=sinks.agent, timeout=5)
    fake.user_text(CHAT, "/start")
    fake.user_text(CHAT, "1")
    group_chat = {"id": -5, "type": "group", "title": "g"}
    fake.push_update({"message": private_message(text="x", chat=group_chat)})
    press = fake.user_press(CHAT, "abcd.svc:1", 3)
    await polling.start()
    fake.agent_text(101, "Hola, soy Luis")  # arrives while a long poll is parked
    async with asyncio.timeout(5):
        await sinks.done.wait()
    await polling.stop()
    texts = [e.text if isinstance(e, Inbound) and e.kind is Kind.TEXT else e for e in sinks.events]
    assert texts[:2] == ["/start", "1"]
    button = sinks.events[2]
    assert isinstance(button, Inbound)
    assert button.payload == "svc:1"
    agent = sinks.events[3]
    assert isinstance(agent, AgentMessage)
    assert agent.text == "Hola, soy Luis"
    # The press was answered so the customer's spinner stops.
    assert [a["callback_query_id"] for a in fake.answered_callbacks] == [
        press["callback_query"]["id"]
    ]
    assert fake.pending_updates == 0  # everything handled was confirmed
    assert fake.calls_to("getUpdates")[0].params["allowed_updates"] == [
        "message",
        "callback_query",
    ]


async def test_polling_confirms_a_batch_only_once_its_updates_have_their_place(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    """Telegram forgets what the next getUpdates confirms: a process killed after that must
    already have each update in its store. The runtime says so through ``placing``'s callback."""
    release = asyncio.Event()
    both = asyncio.Event()
    seen: list[str] = []

    async def placing(event: Inbound, placed: Callable[[], None]) -> None:
        seen.append(event.text)
        if len(seen) == 2:
            both.set()
        await release.wait()  # (the store is slow to answer)
        placed()

    async def unused(event: Inbound) -> None:
        pytest.fail("the plain sink is not used when placing is given")

    polling = TelegramPolling(channel, on_inbound=unused, placing=placing, timeout=5)
    fake.user_text(CHAT, "hola")
    fake.user_text(CHAT, "sigo aquí")
    await polling.start()
    await fake.wait_for_calls("getUpdates", 1)
    await asyncio.wait_for(both.wait(), timeout=5)
    await asyncio.sleep(0.2)
    assert len(fake.calls_to("getUpdates")) == 1  # not confirmed while not placed
    assert fake.pending_updates == 2
    release.set()
    await fake.wait_until_consumed()
    await polling.stop()
    assert seen == ["hola", "sigo aquí"]


async def test_polling_fetches_again_what_could_not_take_its_place(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    """The store unreachable for a message's first two tries: it is not confirmed to Telegram,
    so it comes again and is handled; one that never gets a place is dropped after a few
    tries (logged) instead of blocking the bot."""
    tries: dict[str, int] = {}
    handled: list[str] = []
    done = asyncio.Event()

    async def placing(event: Inbound, placed: Callable[[], None]) -> None:
        if event.text in handled:  # fetched again with one before it: a repeat (the dedupe)
            placed()
            return
        tries[event.text] = tries.get(event.text, 0) + 1
        if event.text == "nunca" or tries[event.text] <= 2:
            raise RuntimeError("session store unavailable")
        placed()
        handled.append(event.text)
        if event.text == "después":
            done.set()

    async def unused(event: Inbound) -> None:
        pytest.fail("the plain sink is not used when placing is given")

    polling = TelegramPolling(
        channel, on_inbound=unused, placing=placing, timeout=1, place_timeout=1
    )
    fake.user_text(CHAT, "hola")
    fake.user_text(CHAT, "nunca")
    fake.user_text(CHAT, "después")
    await polling.start()
    await asyncio.wait_for(done.wait(), timeout=10)
    await fake.wait_until_consumed()
    await polling.stop()
    assert handled == ["hola", "después"]
    assert tries["hola"] == 3
    assert tries["nunca"] == 1 + MAX_FETCHES_UNPLACED  # then dropped, not fetched forever


async def test_polling_survives_a_failing_handler_and_a_server_error(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def sink(event: Inbound) -> None:
        seen.append(event.text)
        if event.text == "boom":
            raise RuntimeError("handler bug")
        done.set()

    fake.fail("getUpdates", error_code=500)
    polling = TelegramPolling(channel, on_inbound=sink, timeout=5, retry_backoff=0.01)
    fake.user_text(CHAT, "boom")
    fake.user_text(CHAT, "sigo aquí")
    await polling.start()
    async with asyncio.timeout(5):
        await done.wait()
    await polling.stop()
    assert seen == ["boom", "sigo aquí"]
    assert polling.handler_errors == 1


async def test_webhook_body_is_dispatched_and_garbage_refused(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    update = parse_update(fake.user_text(CHAT, "hola"), channel.bot)
    await dispatch_update(update, channel, sinks.inbound, sinks.agent)
    [event] = sinks.events
    assert isinstance(event, Inbound)
    assert event.text == "hola"
    with pytest.raises(BadUpdate):
        parse_update({"message": "nope"}, channel.bot)


async def test_polling_stops_promptly_while_a_long_poll_is_parked(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    sinks = Sinks(want=1)
    polling = TelegramPolling(channel, on_inbound=sinks.inbound, timeout=30)
    await polling.start()
    await fake.wait_for_calls("getUpdates", 1)
    async with asyncio.timeout(3):  # far below the 30 s long-poll timeout
        await polling.stop()
    assert sinks.events == []
