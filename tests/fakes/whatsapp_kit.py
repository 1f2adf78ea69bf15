"""What the WhatsApp channel's tests share: the app's test settings, keys, options and a webhook
served on a test client that records what it hands on (tests/bot/channels/whatsapp/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import graph_api
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from graph_api import signed_request
from pydantic import SecretStr

from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.channels.whatsapp.webhook import WhatsAppWebhook
from flows.types import ConvKey, Inbound, Option

TOKEN = "EAAGtestTOKEN0123456789secret"


SECRET = "app-secret-for-tests"


VERIFY = "verify-me-please"


ANA = "573001112233"


LUIS = "573104445566"


def make_settings(api_url: str = "http://127.0.0.1:9/v21.0") -> WhatsAppSettings:
    return WhatsAppSettings(
        access_token=SecretStr(TOKEN),
        phone_number_id=graph_api.PHONE_NUMBER_ID,
        app_secret=SecretStr(SECRET),
        verify_token=SecretStr(VERIFY),
        api_url=api_url,
    )


def key(wa_id: str = ANA) -> ConvKey:
    return ConvKey("whatsapp", wa_id)


def options(n: int, label: str = "Option number {}") -> tuple[Option, ...]:
    return tuple(Option(f"opt{i}", label.format(i)) for i in range(1, n + 1))


@dataclass
class Hook:
    client: TestClient[web.Request, web.Application]
    webhook: WhatsAppWebhook
    received: list[Inbound] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)

    async def post(self, payload: dict[str, Any], secret: str = SECRET) -> int:
        body, headers = signed_request(payload, secret)
        response = await self.client.post("/webhooks/whatsapp", data=body, headers=headers)
        await self.webhook.drain()
        return response.status


def serve(webhook: WhatsAppWebhook) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.router.add_get("/webhooks/whatsapp", webhook.get)
    app.router.add_post("/webhooks/whatsapp", webhook.post)
    return TestClient(TestServer(app))


def hook_with(
    received: list[Inbound],
    sink: Callable[[Inbound], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> tuple[WhatsAppWebhook, list[str]]:
    reads: list[str] = []

    async def record(inbound: Inbound) -> None:
        received.append(inbound)

    async def mark(wamid: str) -> None:
        reads.append(wamid)

    return WhatsAppWebhook(make_settings(), sink or record, on_mark_read=mark, **kwargs), reads
