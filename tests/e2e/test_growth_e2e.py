"""Nothing the service writes to Redis lives for ever (issue 10, item 13), end to end.

The real ``python -m bot run`` (long polling on the fake Bot API, the WispHub sandbox, Redis
database 13 of conftest) serves a customer through identification, a handoff to an agent and
back, a failed verification of another customer, and a turn recovered after kill -9. Then every
key in the database must have a TTL: none may be left to grow with the customers served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from e2e_harness import (
    BotProcess,
    Chat,
    bot_env,
    eventually,
    free_port,
    identify,
    launched,
    running,
    wait_for_text,
)
from telegram_api import FakeTelegram

from bot.store import redis_key
from integrations.wisphub.sandbox import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANA = ("1020304050", "ana maria ruiz", "Ana")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def polling(
    request: pytest.FixtureRequest, fake: FakeTelegram, sandbox: Sandbox, workdir: Path
) -> AsyncIterator[BotProcess]:
    """One long-polling bot; HANDOFF_TIMEOUT=4, so its sweeper looks every second."""
    bot = BotProcess(
        "growth", bot_env(fake, sandbox.url, free_port(), HANDOFF_TIMEOUT="4"), workdir
    )
    async with launched({"growth": bot}, str(request.path)):
        yield bot


@pytest_asyncio.fixture(loop_scope="module")
async def bot(polling: BotProcess, clean: None) -> BotProcess:
    """The bot, running, on a flushed database."""
    return await running(polling)


async def test_every_key_has_a_ttl_after_handoff_lockout_and_recovery(
    bot: BotProcess,
    fake: FakeTelegram,
    new_chat: Callable[..., Chat],
    sandbox: Sandbox,
    redis_client: aioredis.Redis,
) -> None:
    ana = new_chat("Ana")
    await identify(ana, *ANA)

    # A handoff: the topic is opened, the agent answers, then closes it.
    agents_start = len(fake.sent(fake.agents_chat_id))
    ana.press("Hablar con un asesor")
    await ana.expect("Te comunico con un asesor")
    card = await wait_for_text(fake, fake.agents_chat_id, "Nueva conversacion", agents_start)
    thread = card.message_thread_id
    assert thread is not None
    ana.mark()
    fake.agent_text(thread, "Hola Ana, soy Luis")
    await ana.expect("soy Luis")
    fake.agent_text(thread, "/cerrar")
    await ana.expect("El asesor cerro la conversacion")

    # Another customer fails the verification: counted in a window.
    luis = new_chat("Luis")
    luis.say("/start")
    await luis.expect("Soy cliente")
    luis.press("Soy cliente")
    await luis.expect("documento")
    luis.say(ANA[0])
    await luis.expect("nombre completo")
    luis.say("Pedro Ortiz")
    await luis.expect("no coincide")

    # A turn whose process dies mid-way is handled again by the next process (the journal).
    sandbox.add_fault("^/", status=0, delay=5.0, count=1)
    seen = len(sandbox.requests)
    ana.say("Estado de cuenta")

    async def looking_up() -> bool:
        return len(sandbox.requests) > seen

    await eventually(looking_up, "the account look-up to reach WispHub")
    bot.kill9()
    sandbox.clear_faults()
    await bot.start()
    await ana.expect("valor mensual", timeout=30)

    async def unlocked() -> bool:
        return not await redis_client.keys("wispbot:lock:*")

    await eventually(unlocked, "the last turn to release its lock")
    ttls = {
        key.decode(): await redis_client.ttl(key) async for key in redis_client.scan_iter(count=500)
    }
    kinds = {name.split(":")[1] for name in ttls}
    assert {"conv", "seen", "rate", "topic", "lockout"} <= kinds, sorted(ttls)
    assert ttls[redis_key("topic", str(thread))] > 0
    assert {name: ttl for name, ttl in ttls.items() if ttl < 0} == {}
