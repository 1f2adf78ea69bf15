"""Start-up checks of ``python -m bot run``: what an operator must fix, told in one line each.

A problem the service cannot run with (the HTTP port taken, Telegram unreachable or refusing the
webhook) raises ``StartupError``, whose message is that line; the CLI prints it and exits
non-zero. A WispHub API key that WispHub refuses is one ERROR line and the service runs on
(``/readyz`` stays 503): customers can still reach agents, and what they write is not lost.
Secrets are never part of a line (text shaped like a bot token is masked even in a library's
message).
"""

from __future__ import annotations

import asyncio
import errno
import logging

from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiohttp import web

from bot.logs import scrub
from bot.settings import Settings
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.errors import (
    WispHubConfigError,
    WispHubError,
    WispHubKeyRefused,
)

log = logging.getLogger(__name__)

# The look at WispHub comes before HTTP serves: a WispHub that does not answer delays start-up
# this long at most (well inside the container health check's 20 s start period).
PROBE_SECONDS = 5.0


class StartupError(Exception):
    """The service cannot start; the message says why in one line."""


async def listen(site: web.BaseSite, settings: Settings) -> None:
    """Start serving HTTP; a port in use (or an address that cannot be had) is one line."""
    host, port = settings.bot.http_host, settings.bot.http_port
    try:
        await site.start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            msg = (
                f"HTTP_PORT {port} is already in use on {host}: another process listens there "
                "(stop it, or set another HTTP_PORT)"
            )
        else:
            reason = err.strerror or type(err).__name__
            msg = f"cannot listen on {host}:{port} (HTTP_HOST, HTTP_PORT): {reason}"
        raise StartupError(msg) from None


def telegram_problem(settings: Settings, err: TelegramAPIError) -> StartupError:
    """Telegram unreachable, or refusing a start-up call (the webhook): one line naming what
    to check."""
    url = str(settings.telegram.api_url).rstrip("/")
    detail = scrub(err.message)
    if isinstance(err, TelegramNetworkError):
        msg = f"cannot reach Telegram at {url} (TELEGRAM_API_URL): {detail}"
    else:
        method = err.method.__api_method__
        setting = "TELEGRAM_WEBHOOK_URL" if method == "setWebhook" else "TELEGRAM_API_URL"
        msg = f"Telegram refused {method} at start-up (check {setting}): {detail}"
    return StartupError(msg)


async def check_wisphub(wisphub: WispHubClient) -> bool:
    """One cheap authenticated GET: a refused key or a wrong URL is one ERROR line, an outage
    one WARNING line. True when WispHub answered; the service runs either way."""
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await wisphub.ping_server()
    except (WispHubError, TimeoutError) as err:
        problem: Exception = err
    else:
        return True
    # Logged outside the handler: an operator's line, not a traceback.
    if isinstance(problem, WispHubKeyRefused):
        pass  # the client reports a refused key itself, once, naming the setting
    elif isinstance(problem, WispHubConfigError):  # the base URL: its message names the setting
        log.error("WispHub is not reachable as configured: %s", problem)
    else:
        log.warning(
            "WispHub did not answer at start-up; /readyz answers 503 until it does",
            extra={"error": str(problem) or type(problem).__name__},
        )
    return False
