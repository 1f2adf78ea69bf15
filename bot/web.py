"""The HTTP app of the service: the health routes and the webhooks' routes.

Routes: ``GET /healthz`` (the process serves), ``GET /readyz`` (Redis and WispHub answer, no
channel failing every send), ``GET /metrics`` (Prometheus), ``POST /webhooks/telegram`` (secret
token checked), ``GET|POST /webhooks/whatsapp`` (verify token; signature checked on the raw body).
The webhooks themselves live with their channels (``bot/channels/*/``); the service
(``bot/service.py``) wires them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import metrics
from bot.http_guard import body_within
from integrations.wisphub.errors import WispHubError

if TYPE_CHECKING:
    from bot.service import Service

READY_CACHE_SECONDS = 5.0


def make_app(service: Service) -> web.Application:
    """The aiohttp application of a service."""
    health = Health(service)
    app = web.Application(
        client_max_size=1024 * 1024,
        middlewares=[body_within(service.settings.bot.http_read_timeout)],
    )
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_post("/webhooks/telegram", service.telegram_webhook)
    if service.whatsapp_hook is not None:
        app.router.add_get("/webhooks/whatsapp", service.whatsapp_hook.get)
        app.router.add_post("/webhooks/whatsapp", service.whatsapp_webhook)
    return app


class Health:
    """The health routes of one service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._ready: tuple[float, bool, dict[str, bool]] = (0.0, False, {})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the process serves."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 only when Redis (if used) and WispHub answer (cached for a few seconds) and no
        channel failed every send of the last ``READY_SEND_WINDOW`` seconds (named false). 503
        once stopping: a load balancer sends no more work."""
        service = self.service
        if service.stopping:
            return web.json_response({"ready": False, "stopping": True}, status=503)
        at, ok, checks = self._ready
        if time.monotonic() - at > READY_CACHE_SECONDS:
            checks = {
                "store": await self._check(self._store_ok()),
                "wisphub": await self._check(self._wisphub_ok()),
            }
            ok = all(checks.values())
            self._ready = (time.monotonic(), ok, checks)
        failing = service.health.failing()
        sending = {name: name not in failing for name in service.channels}
        ok = ok and not failing
        return web.json_response({"ready": ok, **checks, **sending}, status=200 if ok else 503)

    async def _check(self, probe: Awaitable[bool]) -> bool:
        try:
            async with asyncio.timeout(3):
                return await probe
        except (TimeoutError, WispHubError):
            return False

    async def _store_ok(self) -> bool:
        assert self.service.runtime is not None
        return await self.service.runtime.store.ping()

    async def _wisphub_ok(self) -> bool:
        assert self.service.runtime is not None
        await self.service.runtime.wisphub.ping_server()
        return True

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format."""
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
