"""Every conversation scenario in ``tests/scenarios/`` runs against the real engine and sandbox.

One test per file (id = file stem). Where a scenario's point is how many times WispHub was asked
to create something (no ticket on an outage, exactly one POST per confirmation), the sandbox's
request log is counted as well, since ``expect_wisphub`` can only prove that a request was made.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.simulate import run_scenario
from integrations.wisphub.client import WispHubClient
from integrations.wisphub.sandbox import Sandbox

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted([*SCENARIOS.glob("*.yaml"), *SCENARIOS.glob("*.yml")])

# Scenarios that state the contract but fail today: each names the bug the lead must fix.
KNOWN_BUGS: dict[str, str] = {}

# (method, path) → how many such requests the whole scenario must make.
REQUEST_COUNTS: dict[str, dict[tuple[str, str], int]] = {
    "01_ticket_es": {("POST", "/tickets/"): 1},
    "16_fault_outage_es": {("POST", "/tickets/"): 0, ("POST", "/clientes/12/ping/"): 0},
    "17_fault_open_ticket_es": {("POST", "/tickets/"): 0},
    "18_fault_fixed_es": {("POST", "/tickets/"): 0},
    "19_fault_cancel_es": {("POST", "/tickets/"): 0},
    "20_fault_partial_es": {("POST", "/tickets/"): 1},
    # One promise per pending invoice: the promise covers the whole balance (issue 14).
    "22_promise_es": {("POST", "/promesa-pago/"): 2},
    "23_promise_none_es": {("POST", "/promesa-pago/"): 0},
    # One POST for the confirmation WispHub failed (never retried blindly), one for the retry.
    "32_ticket_post_fails_es": {("POST", "/tickets/"): 2},
    "44_fault_ticket_en": {("POST", "/tickets/"): 1},
    "45_fault_branches_en": {("POST", "/tickets/"): 0},
    "46_fault_outage_open_ticket_en": {("POST", "/tickets/"): 0},
    "90_payment_report_photo_es": {("POST", "/tickets/"): 1},
    "91_payment_report_typed_en": {("POST", "/tickets/"): 1},
    "92_payment_report_duplicate_es": {("POST", "/tickets/"): 1},
    # The POST WispHub failed (never retried blindly), then the one after looking first.
    "93_payment_report_post_fails_es": {("POST", "/tickets/"): 2},
    "95_cancel_service_agent_es": {("POST", "/tickets/"): 0},
    "96_move_outside_hours_es": {("POST", "/tickets/"): 1},
    "97_change_plan_no_agents_en": {("POST", "/tickets/"): 1},
    "98_cancel_request_declined_en": {("POST", "/tickets/"): 0},
    "99_payment_report_whatsapp_es": {("POST", "/tickets/"): 1},
}


def _param(path: Path) -> Any:
    marks = []
    if path.stem in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[path.stem]))
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.fixture(autouse=True)
def quick_wisphub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter waits between ping polls and GET retries; no scenario asserts on timing."""
    monkeypatch.setattr(WispHubClient, "ping_poll_interval", 0.01)
    monkeypatch.setattr(WispHubClient, "backoff_base", 0.01)


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch) -> list[Sandbox]:
    """Every sandbox a scenario run builds, so its request log can be inspected."""
    made: list[Sandbox] = []
    original = Sandbox.from_fixture.__func__  # type: ignore[attr-defined]

    def capture(cls: type[Sandbox], fixture: dict[str, Any]) -> Sandbox:
        sandbox: Sandbox = original(cls, fixture)
        made.append(sandbox)
        return sandbox

    monkeypatch.setattr(Sandbox, "from_fixture", classmethod(capture))
    return made


def test_there_are_scenarios_for_both_languages() -> None:
    """The suite is not silently empty, and English is covered as well as Spanish."""
    stems = [p.stem for p in FILES]
    assert len(stems) >= 27
    assert any(s.endswith("_en") for s in stems)
    assert any(s.endswith("_es") for s in stems)


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
async def test_scenario(path: Path, sandboxes: list[Sandbox]) -> None:
    """The conversation goes as the file says."""
    result = await run_scenario(path)
    if not result.ok:
        transcript = "\n".join(result.transcript)
        pytest.fail(f"{result.name}\n{transcript}\n!!! {result.error}", pytrace=False)
    expected = REQUEST_COUNTS.get(path.stem, {})
    if expected:
        (sandbox,) = sandboxes
        for (method, request_path), count in expected.items():
            made = [r for r in sandbox.requests if (r.method, r.path) == (method, request_path)]
            assert len(made) == count, f"{method} {request_path}: {len(made)} requests"


WRONG = """\
name: a deliberately wrong expectation
steps:
  - user: /start
  - expect: "Soy cliente"
  - expect: "this text is never sent"
  - press: "Soy cliente"
"""


async def test_a_wrong_expectation_fails_and_names_its_step(tmp_path: Path) -> None:
    """A scenario that cannot hold fails, naming the step, with the transcript so far."""
    path = tmp_path / "wrong.yaml"
    path.write_text(WRONG, encoding="utf-8")
    result = await run_scenario(path)
    assert not result.ok
    assert result.error is not None
    assert "step 3" in result.error
    assert "this text is never sent" in result.error
    assert result.transcript[0] == "you> /start"
    assert any("Soy cliente" in line for line in result.transcript)
    assert not any("[Soy cliente]" in line for line in result.transcript)  # stopped at step 3


def _simulate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "simulate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_simulate_command_exits_zero_when_scenarios_pass() -> None:
    """``python -m bot simulate`` prints the transcript and exits 0."""
    done = _simulate(SCENARIOS / "01_ticket_es.yaml", SCENARIOS / "04_identify_es.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout


def test_simulate_command_exits_non_zero_on_a_failing_scenario(tmp_path: Path) -> None:
    """A folder stands for its YAML files; one failure among them fails the command."""
    (tmp_path / "a_ok.yaml").write_text(
        (SCENARIOS / "02_public_menu_es.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (tmp_path / "b_wrong.yaml").write_text(WRONG, encoding="utf-8")
    done = _simulate(tmp_path)
    assert done.returncode != 0
    assert "=== FAIL a deliberately wrong expectation" in done.stdout
    assert "step 3" in done.stdout
    assert "this text is never sent" in done.stdout
    assert "1 passed, 1 failed" in done.stdout
