"""`python -m bot understand` as a user runs it: JSON lines in and out, the training dump, the
evaluation gate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flows.understand import INTENTS
from tests.bot.test_cli import ROOT
from tests.bot.test_cli import run as run_bot

EVAL_ES = ROOT / "tests" / "understand" / "eval_es.yaml"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")  # the runs share one model cache, not the user's


def run(args: list[str], cache_home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_bot(
        ["understand", *args], stdin, XDG_CACHE_HOME=str(cache_home), TIMEZONE="America/Bogota"
    )


def test_one_json_object_a_line_for_each_message(cache_home: Path) -> None:
    messages = ["hola", "no me jala el internet", "CC 1.020.304.050", "", "ya pagué 50 mil"]
    result = run(["--language", "es"], cache_home, "\n".join(messages) + "\n")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == messages
    for line in lines:
        assert set(line) == {"text", "intent", "confidence", "entities"}
        assert line["intent"] in INTENTS
        assert 0 <= line["confidence"] <= 1
    assert lines[0]["intent"] == "greet"
    assert lines[1]["intent"] == "fault_no_internet"
    assert lines[2]["entities"] == {"document": "1020304050"}
    assert lines[3]["intent"] == "out_of_scope"
    assert lines[4]["entities"] == {"amount": 50000}


def test_dates_come_out_as_iso_days(cache_home: Path) -> None:
    result = run(["--language", "en"], cache_home, "I'll pay tomorrow\n")
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["intent"] == "payment_promise"
    day = line["entities"]["date"]
    assert len(day) == 10
    assert day[4] == day[7] == "-"


def test_dump_training_writes_every_example(cache_home: Path) -> None:
    result = run(["--dump-training"], cache_home)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {tuple(sorted(r)) for r in rows} == {("intent", "language", "text")}
    assert {r["language"] for r in rows} == {"es", "en"}
    assert {r["intent"] for r in rows} == set(INTENTS)
    assert {"text": "ya pague, reconéctenme", "intent": "payment_report", "language": "es"} in rows
    only_en = run(["--dump-training", "--language", "en"], cache_home)
    assert {json.loads(line)["language"] for line in only_en.stdout.splitlines()} == {"en"}


def test_eval_prints_the_scores_and_gates_on_accuracy(cache_home: Path) -> None:
    result = run(["--eval", str(EVAL_ES)], cache_home)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "accuracy" in out
    assert "precision" in out
    assert "recall" in out
    assert "fault_no_internet" in out
    strict = run(["--eval", str(EVAL_ES), "--min-accuracy", "1.01"], cache_home)
    assert strict.returncode == 1
    assert "is under" in strict.stdout


def test_an_isp_folder_of_examples_is_learned(cache_home: Path, tmp_path: Path) -> None:
    (tmp_path / "es.yaml").write_text(
        "language: es\nintents:\n  plans:\n" + "".join(f"    - zanahoria {i}\n" for i in range(5))
    )
    result = run(["--language", "es", "--examples", str(tmp_path)], cache_home, "zanahoria\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["intent"] == "plans"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "es.yaml").write_text("language: es\nintents:\n  pizza: [una]\n")
    broken = run(["--language", "es", "--examples", str(bad)], cache_home, "hola\n")
    assert broken.returncode == 2
    assert "unknown intent 'pizza'" in broken.stderr
