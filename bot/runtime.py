"""Wiring: settings → WispHub client, session store, handoff, engine. Built once per process."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from bot import metrics
from bot.engine import Engine, wall_clock
from bot.settings import Settings, require
from bot.store import SessionStore, make_store
from bot.store.subscriptions import NoticeRegistry, make_registry
from flows.base import FlowContext
from flows.ports import HandoffPort, Subscriptions
from flows.understand import Understanding
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox, running_sandbox

log = logging.getLogger(__name__)


def _observe_wisphub(endpoint: str, outcome: str, seconds: float) -> None:
    metrics.labelled(metrics.WISPHUB_CALLS, endpoint, outcome).observe(seconds)


def _circuit_changed(state: str) -> None:
    metrics.CIRCUIT_OPEN.set(1 if state == "open" else 0)


@functools.cache
def understanding(tz: tzinfo, examples: Path | None = None) -> Understanding:
    """The free-text models, loaded once per process (trained, or read from their cache), with
    the ISP's own examples when ``UNDERSTANDING_EXAMPLES`` names their folder."""
    loaded = Understanding.load(tz=tz, extra_dirs=[examples] if examples else ())
    log.info(
        "understanding loaded",
        extra={
            "milliseconds": {k: round(v * 1000) for k, v in loaded.report.seconds.items()},
            "cached": loaded.report.cached,
        },
    )
    return loaded


@dataclass
class Runtime:
    """The pieces one process runs with."""

    settings: Settings
    engine: Engine
    wisphub: WispHubClient
    store: SessionStore
    handoff: HandoffPort
    sandbox: Sandbox | None = None
    notices: NoticeRegistry | None = None  # None: NOTIFY_ENABLED=false


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    handoff: HandoffPort,
    *,
    sandbox: Sandbox | None = None,
    use_sandbox: bool = False,
    store: SessionStore | None = None,
    clock: Callable[[], float] = wall_clock,
    subscriptions: Subscriptions | Literal["registry"] | None = "registry",
) -> AsyncIterator[Runtime]:
    """Start what the engine needs (the demo sandbox when asked) and close it all at the end.

    ``subscriptions``: what the dialog subscribes customers to notices with; by default the
    store's registry (None when ``NOTIFY_ENABLED`` is false); the scenario runner passes its own
    recorder, or None."""
    async with AsyncExitStack() as stack:
        wisphub_settings = settings.wisphub
        if use_sandbox or sandbox is not None:
            served = await stack.enter_async_context(running_sandbox(sandbox))
            wisphub_settings = wisphub_settings.model_copy(
                update={"api_url": served.url, "api_key": SecretStr(SANDBOX_API_KEY)}
            )
            sandbox = served
        else:
            require(wisphub_settings.api_key, "WISPHUB_API_KEY")
        wisphub = WispHubClient.build(
            wisphub_settings, tz=settings.bot.tz, country_code=settings.bot.default_country_code
        )
        stack.push_async_callback(wisphub.aclose)
        wisphub.observer = _observe_wisphub
        wisphub.breaker.on_change = _circuit_changed
        if store is None:
            # A topic's mapping lives as long as an idle session (renewed while in use).
            store = make_store(
                settings.bot.redis_url, clock=clock, topic_ttl=settings.bot.session_ttl
            )
            stack.push_async_callback(store.aclose)
        notices = make_registry(store, clock) if settings.bot.notify_enabled else None
        ctx = FlowContext(
            wisphub=wisphub,
            store=store,
            settings=settings.dialog(),
            handoff=handoff,
            clock=clock,
            understanding=understanding(settings.bot.tz, settings.bot.understanding_examples),
            subscriptions=notices if subscriptions == "registry" else subscriptions,
        )
        engine = Engine(ctx, settings.bot)
        yield Runtime(settings, engine, wisphub, store, handoff, sandbox, notices)
