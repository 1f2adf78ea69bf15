"""Nothing a full conversation produces (replies, agents' cards and notes, logs) holds a secret.

A verified customer goes through every flow, asks for an agent, the agent relays and files a
ticket; then everything recorded is scanned for the API key, the client records' passwords and
coordinates, and for full document numbers in logs (they must show their last 3 digits only).
"""

from __future__ import annotations

import itertools
import logging

import pytest
from pydantic import SecretStr

from bot.channels.telegram.topics import card_text
from bot.handoff import LocalAgents
from bot.logs import JsonFormatter, scrub
from bot.runtime import open_runtime
from bot.settings import load_settings
from bot.store import MemoryStore
from flows.ports import AgentRequest
from flows.texts import Texts
from flows.types import AgentMessage, ConvKey, Inbound, Kind, Outbound
from integrations.wisphub.sandbox import SANDBOX_API_KEY, Sandbox

KEY = ConvKey("telegram", "7007")
DOC = "1020304050"


def secrets_of(sandbox: Sandbox) -> set[str]:
    """Every secret value the sandbox's records hold."""
    found: set[str] = {SANDBOX_API_KEY}
    for record in sandbox.clients:
        for name, value in record.items():
            if (name.startswith("password") or name == "coordenadas") and value:
                found.add(str(value))
    return found


async def test_a_full_run_leaks_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox = Sandbox()
    agents = LocalAgents()
    replies: list[Outbound] = []
    events = itertools.count()
    async with open_runtime(load_settings(), agents, sandbox=sandbox, store=MemoryStore()) as rt:

        async def say(text: str) -> None:
            replies.extend(
                await rt.engine.handle(Inbound(KEY, f"e{next(events)}", Kind.TEXT, text=text))
            )

        for text in (
            "/start",
            "Soy cliente",
            DOC,
            "ana ruiz",
            "Estado de cuenta",
            "Mis tickets",
            "Promesa de pago",
            "Reportar falla",
            "Sin internet",
            "Sigue igual",
            "Sin servicio desde ayer",
            "Confirmar",
            "Hablar con un asesor",
            "¿Me ayudan?",
        ):
            await say(text)
        topic = agents.topic_of(KEY)
        assert topic is not None
        for text in ("Hola, soy Luis del soporte", "/ticket revisar ONT del cliente", "/cerrar"):
            replies.extend(
                await rt.engine.from_agent(
                    AgentMessage(topic.thread_id, next(events), text, "Luis")
                )
            )

    produced = [r.text for r in replies] + [o.label for r in replies for o in r.options]
    produced += topic.posts
    formatter = JsonFormatter()
    logs = [formatter.format(record) for record in caplog.records]
    everything = "\n".join(produced + logs)
    for secret in secrets_of(sandbox):
        assert secret not in everything
    assert DOC not in "\n".join(logs)  # documents in logs show their last 3 digits only
    assert "abrí el ticket #" in "\n".join(produced)  # the run really went through


def test_the_agents_card_shows_verified_details_only() -> None:
    t = Texts("es")
    key = ConvKey("whatsapp", "573001112233")
    unverified = card_text(AgentRequest(key, "Ana", history=(("c", "mi cédula ******050"),)), t)
    assert "sin verificar" in unverified
    assert "Plan" not in unverified
    verified = card_text(
        AgentRequest(key, "Ana", "Ana María Ruiz Gómez", 10, "Hogar 50 Mbps", "$ 0", ()), t
    )
    assert "Ana María Ruiz Gómez · servicio 10" in verified
    assert "Hogar 50 Mbps" in verified


def test_log_lines_mask_anything_shaped_like_a_secret() -> None:
    line = scrub(
        "token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw and Api-Key abcdef123456 "
        "password_servicio=hunter22"
    )
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in line
    assert "abcdef123456" not in line
    assert "hunter22" not in line


def test_settings_never_show_their_secrets() -> None:
    settings = load_settings(
        wisphub={"api_key": SecretStr("very-secret-key")},
        telegram={"bot_token": SecretStr("123456:ABCDEFGHIJKLMNOP")},
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "very-secret-key" not in shown
    assert "ABCDEFGHIJKLMNOP" not in shown
