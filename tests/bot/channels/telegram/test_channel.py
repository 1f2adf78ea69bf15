"""The Telegram channel against the fake Bot API: replies, pacing, retries, topics, the lean path."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import Update
from pydantic import SecretStr
from telegram_api import FakeTelegram

from bot.channels.base import DeliveryError
from bot.channels.telegram.channel import TelegramChannel, make_bot
from bot.channels.telegram.parse import (
    decode_callback_data,
    update_to_inbound,
)
from bot.channels.telegram.render import text_parts
from bot.channels.telegram.sender import api_error
from flows.types import ConvKey, Kind, Media, Option, Outbound

CHAT = 1001
KEY = ConvKey("telegram", str(CHAT))

# ---- replies out ------------------------------------------------------------------------------


async def test_plain_text_is_sent_without_parse_mode(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "<b>Saldo</b> & más"))
    [sent] = fake.sent(CHAT)
    assert sent.text == "<b>Saldo</b> & más"
    assert sent.parse_mode is None


async def test_options_round_trip_through_callback_data(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = (
        Option("svc:1", "Soy cliente"),
        Option("plans", "Planes y precios"),
        Option("agent", "Hablar con un asesor"),
    )
    await channel.send(Outbound(KEY, "¿Qué desea hacer?", options))
    [sent] = fake.sent(CHAT)
    assert [b["text"] for b in sent.buttons] == [o.label for o in options]
    pressed = []
    for button in sent.buttons:
        raw = fake.user_press(CHAT, button["callback_data"], sent.message_id)
        inbound = update_to_inbound(Update.model_validate(raw))
        assert inbound is not None
        assert inbound.kind is Kind.BUTTON
        assert inbound.event_id == str(raw["update_id"])
        pressed.append(inbound.payload)
    assert pressed == ["svc:1", "plans", "agent"]


async def test_short_labels_sit_two_to_a_row_long_ones_alone(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    short = (Option("ok", "Ya funciona"), Option("ko", "Sigue igual"), Option("x", "Salir"))
    await channel.send(Outbound(KEY, "¿Resuelto?", short))
    long = (Option("a", "Hablar con un asesor"), Option("b", "Planes y precios"))
    await channel.send(Outbound(KEY, "Menú", long))
    rows = [[len(r) for r in (m.reply_markup or {})["inline_keyboard"]] for m in fake.sent(CHAT)]
    assert rows == [[2, 1], [1, 1]]


async def test_callback_data_refuses_personal_numbers_and_oversize(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    with pytest.raises(DeliveryError, match="7\\+ digits"):
        await channel.send(Outbound(KEY, "x", (Option("doc:1023456789", "Ana"),)))
    with pytest.raises(DeliveryError, match="64-byte"):
        await channel.send(Outbound(KEY, "x", (Option("o" * 60, "Largo"),)))
    assert fake.sent(CHAT) == []  # nothing half-sent


async def test_callback_data_never_carries_a_long_digit_run(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = tuple(Option(f"svc:{n}", f"Servicio {n}") for n in (1, 22, 333333))
    for _ in range(20):  # fresh random tokens each time
        await channel.send(Outbound(KEY, "Elija el servicio", options))
    data = [b["callback_data"] for m in fake.sent(CHAT) for b in m.buttons]
    assert len(data) == 60
    assert not [d for d in data if re.search(r"\d{7,}", d) or len(d.encode()) > 64]


async def test_long_text_arrives_split_in_order(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    lines = [f"línea {i:04d} " + "x" * 40 for i in range(200)]
    text = "\n".join(lines)
    assert 10_000 <= len(text) <= 12_000
    await channel.send(Outbound(KEY, text, (Option("menu", "Menú"),)))
    sent = await fake.wait_for_messages(CHAT, 3)
    assert len(sent) == 3
    assert all(len(m.text or "") <= 4096 for m in sent)
    assert "\n".join(m.text or "" for m in sent) == text  # cut at line ends, nothing lost
    assert [bool(m.reply_markup) for m in sent] == [False, False, True]


def test_split_without_spaces_cuts_hard() -> None:
    parts = text_parts("a" * 10_000)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


async def test_429_retry_after_is_honoured(channel: TelegramChannel, fake: FakeTelegram) -> None:
    fake.fail("sendMessage", error_code=429, retry_after=1)
    await channel.send(Outbound(KEY, "Su saldo es $ 89.900"))
    assert [m.text for m in fake.sent(CHAT)] == ["Su saldo es $ 89.900"]
    first, second = fake.calls_to("sendMessage")
    assert first.error_code == 429
    assert second.error_code is None
    assert second.at - first.at >= 1.0


async def test_server_error_then_success_delivers_once(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", error_code=500)
    await channel.send(Outbound(KEY, "hola"))
    assert [m.text for m in fake.sent(CHAT)] == ["hola"]
    assert [c.error_code for c in fake.calls_to("sendMessage")] == [500, None]
    assert channel.failed_deliveries == 0


async def test_each_call_reports_its_outcome_for_readiness(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    outcomes: list[bool] = []
    channel.on_outcome = outcomes.append
    fake.fail("sendMessage", error_code=500)
    await channel.send(Outbound(KEY, "hola"))
    fake.fail("sendMessage", error_code=403, description="Forbidden: bot was blocked by the user")
    with pytest.raises(DeliveryError):  # one customer's refusal says nothing of the channel
        await channel.send(Outbound(KEY, "hola"))
    assert outcomes == [False, True]


async def test_persistent_server_errors_give_up_after_max_retries(
    bot: Bot, fake: FakeTelegram
) -> None:
    channel = TelegramChannel(bot, per_chat_interval=0, global_rate=0, max_retries=2)
    channel.retry_backoff = 0.01
    fake.fail("sendMessage", error_code=502, count=None)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts"):
        await channel.send(Outbound(KEY, "hola"))
    await channel.aclose()
    assert len(fake.calls_to("sendMessage")) == 3
    assert channel.failed_deliveries == 1


async def test_blocked_bot_fails_at_once_without_leaking_the_token(
    channel: TelegramChannel, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.block(CHAT)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="Forbidden") as info:
        await channel.send(Outbound(KEY, "hola"))
    assert len(fake.calls_to("sendMessage")) == 1
    assert channel.failed_deliveries == 1
    assert fake.token not in str(info.value)
    assert fake.token.split(":")[1] not in caplog.text
    assert any(getattr(r, "conv", None) == "telegram:1001" for r in caplog.records)


async def test_concurrent_sends_to_one_chat_keep_their_order(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    # The first message meets two transient errors: without the per-chat lane the other nine
    # would overtake it while it backs off.
    fake.fail("sendMessage", error_code=500, count=2, chat_id=CHAT)
    other = ConvKey("telegram", "2002")
    sends = [channel.send(Outbound(KEY, f"m{i}")) for i in range(10)]
    sends.append(channel.send(Outbound(other, "otro cliente")))
    await asyncio.gather(*sends)
    assert [m.text for m in fake.sent(CHAT)] == [f"m{i}" for i in range(10)]
    assert [m.text for m in fake.sent(2002)] == ["otro cliente"]
    # The other customer was not held up behind the first one's retries.
    assert fake.sent(2002)[0].at < fake.sent(CHAT)[0].at


async def test_private_chat_pacing_allows_a_burst_then_slows(bot: Bot, fake: FakeTelegram) -> None:
    # Bounds that a busy machine cannot break: load only delays arrivals, so the paced messages
    # are checked against the time the sends began (lower bounds), and the burst against an
    # interval long enough that three trips fit in it however slow they are.
    interval = 1.0
    channel = TelegramChannel(bot, per_chat_interval=interval, global_rate=0)
    began = time.monotonic()
    for i in range(5):
        await channel.send(Outbound(KEY, f"m{i}"))
    await channel.aclose()
    at = fake.timestamps(CHAT)
    assert at[2] - began < interval  # a three-message reply goes out at once
    assert at[3] - began >= interval  # the fourth waits for the bucket to refill
    assert at[4] - began >= 2 * interval  # and the fifth for one more interval


async def test_media_with_a_source_is_copied_after_the_text(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    agents = ConvKey("telegram", str(fake.agents_chat_id))
    out = Outbound(KEY, "Luis le envió:", media=Media("photo", "55"), source_key=agents)
    await channel.send(out)
    text, copy = fake.sent(CHAT)
    assert text.text == "Luis le envió:"
    assert (copy.method, copy.from_chat_id, copy.source_message_id) == (
        "copyMessage",
        fake.agents_chat_id,
        55,
    )


async def test_answer_callback_stops_the_spinner_and_tolerates_errors(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.answer_callback("777")
    fake.fail("answerCallbackQuery", 400, description="Bad Request: query is too old")
    await channel.answer_callback("778")
    assert [a["callback_query_id"] for a in fake.answered_callbacks] == ["777"]


# ---- the agents' forum ------------------------------------------------------------------------


async def test_topic_lifecycle(channel: TelegramChannel, fake: FakeTelegram) -> None:
    first = await channel.create_topic("Ana Ruiz · telegram")
    second = await channel.create_topic("x" * 300)
    assert second > first
    assert len(fake.topics[second].name) == 128
    await channel.close_topic(first)
    await channel.close_topic(first)  # TOPIC_NOT_MODIFIED tolerated
    assert fake.topics[first].closed
    await channel.reopen_topic(first)
    await channel.reopen_topic(first)
    assert not fake.topics[first].closed


async def test_unknown_topic_is_a_delivery_error(channel: TelegramChannel) -> None:
    with pytest.raises(DeliveryError, match="TOPIC_ID_INVALID"):
        await channel.close_topic(9999)


async def test_post_and_copy_between_topic_and_customer(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    thread = await channel.create_topic("Ana Ruiz")
    card_id = await channel.post_to_topic(thread, "Cliente: Ana\n" + "historial " * 900)
    await channel.copy_to_topic(thread, CHAT, 12)
    await channel.copy_from_topic(str(CHAT), 34)
    posted = fake.sent(fake.agents_chat_id)
    assert posted[0].message_id == card_id
    assert [m.method for m in posted] == ["sendMessage"] * 3 + ["copyMessage"]
    assert all(m.message_thread_id == thread for m in posted)
    assert (posted[3].from_chat_id, posted[3].source_message_id) == (CHAT, 12)
    [copy_out] = fake.sent(CHAT)
    assert (copy_out.from_chat_id, copy_out.source_message_id) == (fake.agents_chat_id, 34)


async def test_forum_needs_an_agents_chat(bot: Bot) -> None:
    channel = TelegramChannel(bot)
    with pytest.raises(DeliveryError, match="TELEGRAM_AGENTS_CHAT_ID"):
        await channel.create_topic("Ana")


async def test_download_file_gives_the_bytes_and_a_type_from_the_path(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.add_file("AgAD-big", b"\xff\xd8\xff jpeg", "photos/file_3.jpg")
    fake.add_file("BQAD-doc", b"%PDF-1.4", "documents/file_4.pdf")
    assert await channel.download_file("AgAD-big") == (b"\xff\xd8\xff jpeg", "image/jpeg")
    assert await channel.download_file("BQAD-doc") == (b"%PDF-1.4", "application/pdf")


async def test_a_failed_download_is_a_delivery_error_without_the_token(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    with pytest.raises(DeliveryError, match="invalid file_id") as unknown:
        await channel.download_file("nope")
    fake.add_file("AgAD-gone", b"x", "photos/file_9.jpg")
    del fake.downloads["photos/file_9.jpg"]  # getFile answers, the download is a 404
    with pytest.raises(DeliveryError, match="404") as gone:
        await channel.download_file("AgAD-gone")
    for err in (unknown, gone):
        assert fake.token not in str(err.value)


async def test_refused_reply_is_counted(channel: TelegramChannel) -> None:
    with pytest.raises(DeliveryError):
        await channel.send(Outbound(KEY, "x", (Option("doc:10234567", "Ana"),)))
    assert channel.failed_deliveries == 1


# ---- the fake's control routes (used by the end-to-end suite) --------------------------------


async def test_fake_control_routes_drive_a_subprocess_fake(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "hola"))
    async with aiohttp.ClientSession(fake.base_url) as http:
        pushed = await http.post("/_fake/user_text", json={"chat_id": CHAT, "text": "menu"})
        assert pushed.status == 200
        sent = await (await http.get(f"/_fake/sent/{CHAT}")).json()
        waited = await http.get(f"/_fake/wait/{CHAT}", params={"n": "2", "timeout": "0.05"})
        assert waited.status == 408
        unknown = await http.post("/_fake/__init__", json={})
        assert unknown.status == 404
    assert [m["text"] for m in sent] == ["hola"]
    updates = await channel.bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["menu"]


@pytest.mark.parametrize(
    "out",
    [
        pytest.param(Outbound(KEY, "", media=Media("photo", "55")), id="no-source"),
        pytest.param(
            Outbound(KEY, "", media=Media("photo", "wamid.X"), source_key=KEY), id="bad-ref"
        ),
        pytest.param(Outbound(ConvKey("whatsapp", "573001112233"), "hola"), id="other-channel"),
    ],
)
async def test_undeliverable_replies_are_refused_and_counted(
    channel: TelegramChannel, fake: FakeTelegram, out: Outbound
) -> None:
    with pytest.raises(DeliveryError):
        await channel.send(out)
    assert channel.failed_deliveries == 1
    assert fake.messages == []


# ---- the lean sending path (JSON over the channel's own session) -------------------------------


async def test_a_reply_with_buttons_goes_as_one_json_body(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    options = (Option("pay", "Pagar"), Option("agent", "Hablar con un agente"))
    await channel.send(Outbound(KEY, "¿Qué desea?", options=options))
    [call] = fake.calls_to("sendMessage")
    assert call.content_type == "application/json"
    markup = call.params.pop("reply_markup")
    assert call.params == {"chat_id": CHAT, "text": "¿Qué desea?"}  # no parse mode: plain text
    rows = markup["inline_keyboard"]
    assert [[b["text"] for b in row] for row in rows] == [["Pagar"], ["Hablar con un agente"]]
    data = [b["callback_data"] for row in rows for b in row]
    assert [decode_callback_data(d) for d in data] == ["pay", "agent"]


async def test_a_callback_answer_goes_as_json(channel: TelegramChannel, fake: FakeTelegram) -> None:
    await channel.answer_callback("4242")
    [call] = fake.calls_to("answerCallbackQuery")
    assert call.content_type == "application/json"
    assert call.params == {"callback_query_id": "4242"}


async def test_a_topic_post_returns_the_new_message_id(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    thread = await channel.create_topic("Ana")
    first = await channel.post_to_topic(thread, "uno")
    second = await channel.post_to_topic(thread, "dos")
    sent = fake.sent(fake.agents_chat_id)
    assert [first, second] == [m.message_id for m in sent]
    assert {m.message_thread_id for m in sent} == {thread}


async def test_lean_429_waits_the_retry_after_telegram_gave(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    fake.fail("sendMessage", error_code=429, retry_after=1)
    await channel.send(Outbound(KEY, "hola"))
    failed, ok = fake.calls_to("sendMessage")
    assert (failed.error_code, ok.error_code) == (429, None)
    assert ok.at - failed.at >= 0.95  # retry_after, not the 10 ms test backoff
    assert [m.text for m in fake.sent(CHAT)] == ["hola"]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, {"parameters": {"retry_after": 7}}, TelegramRetryAfter),
        (400, {}, TelegramBadRequest),
        (403, {}, TelegramForbiddenError),
        (404, {}, TelegramNotFound),
        (413, {}, TelegramEntityTooLarge),
        (500, {}, TelegramServerError),
        (502, {}, TelegramServerError),
        (418, {}, TelegramAPIError),
    ],
)
def test_bot_api_errors_map_onto_aiograms_exceptions(
    status: int, body: dict[str, Any], kind: type[TelegramAPIError]
) -> None:
    """The lean path raises what aiogram's own response check raises for the same reply."""
    bot = make_bot(SecretStr("1:x"), "http://127.0.0.1:9")
    reply = {"ok": False, "error_code": status, "description": "x", **body}
    payload = {"chat_id": CHAT, "text": "hola"}
    err = api_error(bot, "sendMessage", payload, status, orjson.dumps(reply))
    assert type(err) is kind
    if isinstance(err, TelegramRetryAfter):
        assert err.retry_after == 7
        assert str(CHAT) in str(err)


@pytest.mark.parametrize("status", [400, 403])
async def test_lean_client_errors_are_not_retried(
    channel: TelegramChannel, fake: FakeTelegram, status: int
) -> None:
    fake.fail("sendMessage", error_code=status, count=None)
    with pytest.raises(DeliveryError):
        await channel.send(Outbound(KEY, "hola"))
    assert len(fake.calls_to("sendMessage")) == 1


async def test_a_description_echoing_the_token_is_scrubbed(
    channel: TelegramChannel, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", error_code=400, description=f"Bad Request: bot{fake.token} no")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="<token>") as info:
        await channel.send(Outbound(KEY, "hola"))
    assert fake.token not in str(info.value)
    assert fake.token not in repr(info.value.__cause__)
    assert fake.token not in caplog.text


async def test_an_unreachable_api_is_retried_then_fails_without_the_token(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens here once the socket closes
    bot = make_bot(SecretStr(fake.token), f"http://127.0.0.1:{port}")
    channel = TelegramChannel(bot, per_chat_interval=0, global_rate=0, max_retries=2)
    channel.retry_backoff = 0.01
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        await channel.send(Outbound(KEY, "hola"))
    await channel.aclose()
    await bot.session.close()
    retries = [r for r in caplog.records if r.getMessage() == "telegram send retry"]
    assert [getattr(r, "reason", None) for r in retries] == ["TelegramNetworkError"] * 2
    assert fake.token not in str(info.value)
    assert fake.token not in caplog.text


async def test_the_session_is_made_again_after_close(
    channel: TelegramChannel, fake: FakeTelegram
) -> None:
    await channel.send(Outbound(KEY, "uno"))
    await channel.aclose()
    await channel.send(Outbound(KEY, "dos"))
    assert [m.text for m in fake.sent(CHAT)] == ["uno", "dos"]
