"""The idiomatic peer: the identify-and-verify conversation as an aiogram 3 template writes it.

Dispatcher + Router + FSM states in ``RedisStorage``, served by aiogram's own webhook handler
(``SimpleRequestHandler``, updates handled in the background), one shared ``httpx.AsyncClient``
for WispHub, a fresh ``GET /clientes/?cedula=`` per document (no cache, as templates do), exact
matches kept. It sends the same number of messages per step as wispbot, so the two are compared
message for message; the free-text conversation (typed greeting, "soy cliente", "cuanto
debo?", thanks) is matched by keyword filters, as a template does. Run:
``python -m benchmarks.peer_aiogram`` with ``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_API_URL``,
``TELEGRAM_WEBHOOK_URL``, ``TELEGRAM_WEBHOOK_SECRET``, ``REDIS_URL``, ``WISPHUB_API_URL``,
``WISPHUB_API_KEY``, ``HTTP_HOST``, ``HTTP_PORT`` (and ``LOG_LEVEL``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import httpx
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

WEBHOOK_PATH = "/webhooks/telegram"
SESSION_TTL = 7 * 24 * 3600

router = Router()


class Identify(StatesGroup):
    """Where the conversation waits for the customer."""

    document = State()
    name = State()
    client = State()


def keyboard(*rows: tuple[str, str]) -> InlineKeyboardMarkup:
    """One button a row: (label, callback data)."""
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in rows]
    )


MAIN_MENU = keyboard(
    ("Soy cliente", "client"), ("Planes y precios", "plans"), ("Hablar con un asesor", "agent")
)
CLIENT_MENU = keyboard(
    ("Estado de cuenta", "account"),
    ("Reportar falla", "fault"),
    ("Mis tickets", "tickets"),
    ("Promesa de pago", "promise"),
    ("Hablar con un asesor", "agent"),
    ("Salir", "exit"),
)


@router.message(CommandStart())
async def start(message: Message, state: FSMContext) -> None:
    """Greeting and the public menu."""
    await state.clear()
    await message.answer(
        "¡Hola! Soy el asistente virtual de FibraNet Demo. ¿En qué te puedo ayudar?"
    )
    await message.answer("Elige una opción:", reply_markup=MAIN_MENU)


@router.callback_query(F.data == "client")
async def i_am_client(callback: CallbackQuery, state: FSMContext) -> None:
    """Soy cliente: ask for the document."""
    await callback.answer()
    await state.set_state(Identify.document)
    if isinstance(callback.message, Message):
        await callback.message.answer(
            "Escribe el número de documento (cédula) del titular, solo números."
        )


@router.message(Identify.document, F.text)
async def document(message: Message, state: FSMContext, wisphub: httpx.AsyncClient) -> None:
    """Look the document up in WispHub; ask for the holder's name."""
    doc = re.sub(r"\D", "", message.text or "")
    if not 5 <= len(doc) <= 12:
        await message.answer("Ese no parece un número de documento. Escribe solo los números.")
        return
    response = await wisphub.get("clientes/", params={"cedula": doc})
    response.raise_for_status()
    found = [c for c in response.json()["results"] if re.sub(r"\D", "", c["cedula"]) == doc]
    if not found:
        await message.answer("No encontré un servicio con ese documento.")
        return
    await state.update_data(doc=doc, holder=found[0]["nombre"], service_id=found[0]["id_servicio"])
    await state.set_state(Identify.name)
    await message.answer(
        "Para proteger tus datos, escribe el nombre completo del titular del servicio."
    )


@router.message(Identify.name, F.text)
async def name(message: Message, state: FSMContext) -> None:
    """Compare with the holder's name (first and last word, case-folded); then the client menu."""
    data = await state.get_data()
    holder = str(data.get("holder", "")).casefold().split()
    typed = (message.text or "").casefold().split()
    if len(typed) < 2 or not holder or typed[0] != holder[0] or typed[-1] not in holder[1:]:
        await message.answer("El nombre no coincide con el del titular. Inténtalo de nuevo.")
        return
    first = str(data["holder"]).split()[0]
    await state.set_state(Identify.client)
    await message.answer(f"¡Gracias, {first}! Verifiqué tu identidad.")
    await message.answer(f"{first}, ¿qué quieres hacer?", reply_markup=CLIENT_MENU)


# Free text (the benchmark's typed conversation), as a template matches it: keyword filters,
# registered after the states' handlers so that a document or a name is never taken for one.
GREETING = r"(?i)^\s*(hola|buenas|buenos d[ií]as)\b"


@router.message(F.text.regexp(GREETING))
async def hello(message: Message, state: FSMContext) -> None:
    """A greeting typed: the same as /start."""
    await start(message, state)


@router.message(F.text.regexp(r"(?i)soy cliente"))
async def i_am_client_typed(message: Message, state: FSMContext) -> None:
    """ "Soy cliente" typed: ask for the document."""
    await state.set_state(Identify.document)
    await message.answer("Escribe el número de documento (cédula) del titular, solo números.")


@router.message(Identify.client, F.text.regexp(r"(?i)cu[aá]nto debo|saldo|deuda"))
async def balance(message: Message) -> None:
    """What the customer owes: pointed to the account statement."""
    await message.answer("Para ver tu saldo elige «Estado de cuenta».", reply_markup=CLIENT_MENU)


@router.message(F.text.regexp(r"(?i)gracias"))
async def thanks(message: Message) -> None:
    """Thanks typed."""
    await message.answer("¡Con gusto! Escríbenos cuando quieras.")


@router.message(F.text)
async def not_understood(message: Message) -> None:
    """Anything else typed."""
    await message.answer("No entendí tu mensaje. Elige una de las opciones.")


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves (the benchmark waits for it)."""
    return web.json_response({"status": "ok"})


def build() -> tuple[web.Application, str, int]:
    """The aiohttp app with the dispatcher mounted; host and port to serve it on."""
    env = os.environ
    session = AiohttpSession(api=TelegramAPIServer.from_base(env["TELEGRAM_API_URL"]))
    bot = Bot(env["TELEGRAM_BOT_TOKEN"], session=session)
    storage = RedisStorage.from_url(env["REDIS_URL"], state_ttl=SESSION_TTL, data_ttl=SESSION_TTL)
    wisphub = httpx.AsyncClient(
        base_url=env["WISPHUB_API_URL"],
        headers={"Authorization": f"Api-Key {env['WISPHUB_API_KEY']}"},
        timeout=10.0,
    )
    dispatcher = Dispatcher(storage=storage, wisphub=wisphub)
    dispatcher.include_router(router)
    secret = env["TELEGRAM_WEBHOOK_SECRET"]

    async def on_startup(bot: Bot) -> None:
        await bot.set_webhook(
            env["TELEGRAM_WEBHOOK_URL"],
            secret_token=secret,
            allowed_updates=dispatcher.resolve_used_update_types(),
        )

    async def on_shutdown(**_: Any) -> None:
        await wisphub.aclose()
        await storage.close()

    dispatcher.startup.register(on_startup)
    dispatcher.shutdown.register(on_shutdown)
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    SimpleRequestHandler(dispatcher=dispatcher, bot=bot, secret_token=secret).register(
        app, path=WEBHOOK_PATH
    )
    setup_application(app, dispatcher, bot=bot)
    return app, env.get("HTTP_HOST", "127.0.0.1"), int(env.get("HTTP_PORT", "8080"))


def main() -> None:
    """Serve the peer until SIGTERM/SIGINT (on uvloop when ``PEER_UVLOOP=1``: the benchmark's
    control that wispbot's lead is not its event loop's)."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    if os.environ.get("PEER_UVLOOP") == "1":
        import uvloop  # only for this variant

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        logging.getLogger("peer").warning("event loop: uvloop")
    app, host, port = build()
    web.run_app(app, host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
