"""Deployment files: Dockerfile, docker-compose.yml, .env.example, and start-up errors.

There is no Docker engine here, so these tests check what an operator relies on without one: the
files parse, name only real settings, list every setting, carry working health checks, and the
service refuses to start with one clear line when a setting is missing or wrong.
"""

from __future__ import annotations

import asyncio
import fnmatch
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from prometheus_client import generate_latest
from pydantic_settings import BaseSettings

from bot import metrics
from bot.settings import Settings, load_settings
from integrations.wisphub.sandbox import running_sandbox

REPO = Path(__file__).resolve().parents[1]
SAT, SUN = 5, 6


# -- helpers ----------------------------------------------------------------------------------
def setting_classes() -> list[type[BaseSettings]]:
    """Every per-concern settings class that load_settings() reads."""
    classes = []
    for field in Settings.model_fields.values():
        cls = field.annotation
        assert isinstance(cls, type)
        assert issubclass(cls, BaseSettings)
        classes.append(cls)
    return classes


def setting_names() -> set[str]:
    """The environment names the settings classes read: env_prefix + field name, upper-cased."""
    return {
        (cls.model_config.get("env_prefix", "") + name).upper()
        for cls in setting_classes()
        for name in cls.model_fields
    }


def secret_names() -> set[str]:
    """Names of the settings that hold secrets (SecretStr)."""
    return {
        (cls.model_config.get("env_prefix", "") + name).upper()
        for cls in setting_classes()
        for name, field in cls.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


@pytest.fixture(autouse=True)
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting unset, whatever its prefix (the shared fixture clears known prefixes)."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)


def compose() -> dict[str, Any]:
    """docker-compose.yml as data."""
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """The command a compose health check runs."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *argv = test
    assert kind in ("CMD", "CMD-SHELL")
    return argv if kind == "CMD" else ["/bin/sh", "-c", argv[0]]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    lines = [
        line
        for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image that runs (after the last FROM)."""
    steps = dockerfile()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def env_example() -> dict[str, str]:
    """.env.example as python-dotenv (and so pydantic-settings) reads it."""
    values = dotenv_values(REPO / ".env.example")
    return {k: v or "" for k, v in values.items()}


# -- a tiny /healthz server for running the health check commands -----------------------------
class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    """A local server answering /healthz with _Health.status; yields its port."""
    handler = type("Health", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def run_check(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Run a health check command with this interpreter as `python`; its exit code."""
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    full_env = {"PATH": os.environ.get("PATH", ""), **(env or {})}
    return subprocess.run(argv, env=full_env, capture_output=True, timeout=30).returncode


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()
    return port


# -- docker-compose.yml ----------------------------------------------------------------------
class TestCompose:
    def test_bot_service(self) -> None:
        bot = compose()["services"]["bot"]
        assert bot["build"] == "."
        assert bot["env_file"] in (".env", [".env"])
        assert service_env(bot)["REDIS_URL"] == "redis://redis:6379/0"
        assert any(str(p).split(":")[-1] == "8080" for p in bot["ports"])
        assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
        assert bot["restart"] == "unless-stopped"
        assert bot["stop_grace_period"] == "30s"
        assert "/healthz" in " ".join(healthcheck_argv(bot["healthcheck"]["test"]))

    def test_bot_listens_where_ports_and_health_check_look(self) -> None:
        # The .env (env_file) may say HTTP_HOST=127.0.0.1 for local runs; in a container that
        # would make the published port dead while the in-container health check still passed.
        bot = compose()["services"]["bot"]
        env = service_env(bot)
        assert env["HTTP_HOST"] == "0.0.0.0"
        port = env["HTTP_PORT"]
        assert any(str(p).split(":")[-1] == port for p in bot["ports"])
        assert f":{port}/healthz" in " ".join(healthcheck_argv(bot["healthcheck"]["test"]))

    def test_redis_persists_and_reports_health(self) -> None:
        data = compose()
        redis = data["services"]["redis"]
        assert redis["image"] == "redis:7-alpine"
        command = redis["command"]
        words = command if isinstance(command, list) else shlex.split(command)
        assert words[words.index("--appendonly") + 1] == "yes"
        volume = next(v for v in redis["volumes"] if str(v).endswith(":/data"))
        assert volume.split(":")[0] in data["volumes"]
        assert healthcheck_argv(redis["healthcheck"]["test"]) == ["redis-cli", "ping"]

    def test_sandbox_only_on_its_profile(self) -> None:
        services = compose()["services"]
        sandbox = services["sandbox"]
        assert sandbox["profiles"] == ["sandbox"]
        assert sandbox["command"] == [
            "python",
            "-m",
            "bot",
            "sandbox",
            "--host",
            "0.0.0.0",
            "--port",
            "8099",
        ]
        # Everything else starts with a plain `docker compose up`.
        assert [name for name, s in services.items() if "profiles" in s] == ["sandbox"]

    def test_every_environment_name_is_a_setting(self) -> None:
        names = setting_names()
        for service in compose()["services"].values():
            unknown = set(service_env(service)) - names
            assert not unknown, f"not settings: {sorted(unknown)}"

    def test_bot_health_check_runs(self, health_server: tuple[int, type[_Health]]) -> None:
        port, handler = health_server
        argv = healthcheck_argv(compose()["services"]["bot"]["healthcheck"]["test"])
        argv = [arg.replace(":8080/", f":{port}/") for arg in argv]
        assert run_check(argv) == 0
        handler.status = 503
        assert run_check(argv) != 0

    async def test_sandbox_health_check_runs_against_the_sandbox(self) -> None:
        # The sandbox answers any path outside /api/ with its HTML page and 200; the check relies
        # on that, and must fail when nothing listens.
        argv = healthcheck_argv(compose()["services"]["sandbox"]["healthcheck"]["test"])
        assert argv[0] == "python"

        async def check(port: int) -> int:
            args = [a.replace(":8099/", f":{port}/") for a in argv[1:]]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await asyncio.wait_for(proc.wait(), 30)

        async with running_sandbox() as sandbox:
            port = int(sandbox.url.split(":")[-1].split("/")[0])
            assert await check(port) == 0
        assert await check(port) != 0


# -- Dockerfile -------------------------------------------------------------------------------
class TestDockerfile:
    def test_both_stages_on_python_311_slim(self) -> None:
        bases = [args.split()[0] for word, args in dockerfile() if word == "FROM"]
        assert len(bases) >= 2
        assert all(base == "python:3.11-slim" for base in bases)

    def test_runs_the_service_as_a_non_root_user(self) -> None:
        stage = final_stage()
        users = [args for word, args in stage if word == "USER"]
        assert users
        assert users[-1].split(":")[0] not in ("root", "0")
        cmd = [args for word, args in stage if word == "CMD"]
        assert json.loads(cmd[-1]) == ["python", "-m", "bot", "run"]
        assert ("STOPSIGNAL", "SIGTERM") in stage
        assert any(word == "EXPOSE" and "8080" in args.split() for word, args in stage)

    def test_listens_on_all_interfaces(self) -> None:
        env = " ".join(args for word, args in final_stage() if word == "ENV")
        assert re.search(r"\bHTTP_HOST=0\.0\.0\.0\b", env)

    def test_installs_runtime_dependencies_only(self) -> None:
        text = (REPO / "Dockerfile").read_text(encoding="utf-8")
        assert "[dev]" not in text
        assert "pip install -e" not in text

    def test_copies_every_package(self) -> None:
        pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
        packages = {
            p.name
            for p in REPO.iterdir()
            if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, x) for x in patterns)
        }
        copied = set()
        for word, args in dockerfile():
            if word == "COPY" and not args.startswith("--from"):
                *sources, _dest = args.split()
                for source in sources:
                    assert (REPO / source).exists(), source
                    copied.add(source.rstrip("/"))
        assert packages <= copied
        # pyproject's `readme` must be in the build context too, or the install fails.
        assert pyproject["project"]["readme"] in copied

    def test_health_check_uses_python_not_curl(
        self, health_server: tuple[int, type[_Health]]
    ) -> None:
        port, handler = health_server
        (check,) = [args for word, args in final_stage() if word == "HEALTHCHECK"]
        assert "curl" not in check
        argv = json.loads(check.split(" CMD ", 1)[1])
        assert run_check(argv, {"HTTP_PORT": str(port)}) == 0
        handler.status = 500
        assert run_check(argv, {"HTTP_PORT": str(port)}) != 0
        assert run_check(argv, {"HTTP_PORT": str(free_port())}) != 0

    def test_context_leaves_out_secrets_and_local_state(self) -> None:
        ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
        for entry in (".env", ".venv", ".git", "tests"):
            assert entry in ignored
        assert "!.env.example" in ignored


# -- .env.example -----------------------------------------------------------------------------
FILLS = {
    "WISPHUB_API_KEY": "wh-3f9a2c7d1e",
    "WISPHUB_TECHNICIAN_ID": "12",
    "TELEGRAM_BOT_TOKEN": "123456789:AAH-example_token_0123456789",
    "TELEGRAM_AGENTS_CHAT_ID": "-1001234567890",
    "TELEGRAM_AGENT_IDS": "111111111,222222222",
    "TELEGRAM_WEBHOOK_URL": "https://bot.example.com/webhooks/telegram",
    "TELEGRAM_WEBHOOK_SECRET": "Zx9_webhook-secret",
    "WHATSAPP_ACCESS_TOKEN": "EAAGexampleAccessToken",
    "WHATSAPP_PHONE_NUMBER_ID": "109876543210",
    "WHATSAPP_APP_SECRET": "0a1b2c3d4e5f",
    "WHATSAPP_VERIFY_TOKEN": "verify-me",
    "REDIS_URL": "redis://redis:6379/0",
    "BUSINESS_HOURS": "mon-fri 08:00-18:00; sat 08:00-13:00",
    "LOG_KEY": "log-pseudonym-secret",
    "PAYMENT_METHODS_TEXT": "Nequi 3001234567 o Bancolombia ahorros 123-456789-01",
    "ISP_NAME": "Fibra Andina",
    "WHATSAPP_TEMPLATE_OUTAGE_RESOLVED": "servicio_restablecido",
    "WHATSAPP_TEMPLATE_TICKET_UPDATE": "actualizacion_ticket",
    "WHATSAPP_TEMPLATE_PAYMENT_REMINDER": "recordatorio_pago",
    "WHATSAPP_TEMPLATE_CSAT": "calificacion_atencion",
    "UNDERSTANDING_EXAMPLES": ".",
}


class TestEnvExample:
    def test_lists_every_setting_exactly_once(self) -> None:
        lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
        assigned = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
        assert len(assigned) == len(set(assigned)), "a setting is listed twice"
        assert set(env_example()) == setting_names()

    def test_lines_read_the_same_in_compose_and_dotenv(self) -> None:
        # No unquoted spaces, `$` only inside single quotes (compose interpolates elsewhere),
        # no trailing comments: docker compose's env_file and python-dotenv then agree.
        shape = re.compile(r"""[A-Z][A-Z0-9_]*=(|"[^"$`\\]*"|'[^']*'|[^\s"'#$\\]+)""")
        for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                assert shape.fullmatch(line), line

    def test_secrets_are_empty(self) -> None:
        values = env_example()
        assert secret_names()
        for name in secret_names():
            assert values[name] == "", name

    def test_documents_the_real_defaults(self, tmp_path: Path) -> None:
        defaults = load_settings()
        (tmp_path / ".env").write_bytes((REPO / ".env.example").read_bytes())
        from_example = load_settings()
        for concern in Settings.model_fields:
            assert (
                getattr(from_example, concern).model_dump()
                == getattr(defaults, concern).model_dump()
            ), concern

    def test_accepted_once_filled_in(self, tmp_path: Path) -> None:
        text = (REPO / ".env.example").read_text(encoding="utf-8")
        empty = {name for name, value in env_example().items() if value == ""}
        assert empty == set(FILLS), "update FILLS to match the placeholders"
        for name, value in FILLS.items():
            text = re.sub(rf"(?m)^{name}=$", f'{name}="{value}"', text)
        (tmp_path / ".env").write_text(text, encoding="utf-8")

        settings = load_settings()

        assert settings.wisphub.api_key is not None
        assert settings.wisphub.api_key.get_secret_value() == FILLS["WISPHUB_API_KEY"]
        assert settings.wisphub.technician_id == 12
        assert settings.telegram.agents_chat_id == -1001234567890
        assert settings.telegram.agent_ids == {111111111, 222222222}
        assert settings.log_secret == FILLS["LOG_KEY"]
        assert str(settings.telegram.webhook_url) == FILLS["TELEGRAM_WEBHOOK_URL"]
        assert settings.whatsapp.enabled
        assert settings.bot.redis_url == "redis://redis:6379/0"
        assert settings.bot.hours.is_open(SAT, time(12, 0))
        assert not settings.bot.hours.is_open(SUN, time(12, 0))
        assert settings.bot.money(89900) == "$ 89.900"
        assert settings.dialog().payment_methods_text == FILLS["PAYMENT_METHODS_TEXT"]


# -- start-up errors ---------------------------------------------------------------------------
KEY = {"WISPHUB_API_KEY": "wh-3f9a2c7d1e"}
# Real processes (exit code, stderr, .env in the working folder): importing the service stack
# takes seconds, so a few representative cases run as processes, all at once, and the wider
# matrix below runs the same entry point in process.
PROCESS_CASES: dict[str, tuple[dict[str, str], str | None, str]] = {
    # case: (environment, .env file text or None, the variable the one line must name)
    "missing-key": ({}, None, "WISPHUB_API_KEY"),
    "read-timeout": ({**KEY, "WISPHUB_READ_TIMEOUT": "abc"}, None, "WISPHUB_READ_TIMEOUT"),
    "from-dotenv": (KEY, "TIMEZONE=Mars/Olympus\n", "TIMEZONE"),
}


@pytest.fixture(scope="module")
def startups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Start `python -m bot run` once per case, all at once; (exit code, stdout, stderr)."""
    procs = {}
    for case, (env, dotenv, _name) in PROCESS_CASES.items():
        # Its own empty folder: a developer's .env in the repository must not leak in.
        cwd = tmp_path_factory.mktemp(case)
        if dotenv is not None:
            (cwd / ".env").write_text(dotenv, encoding="utf-8")
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(cwd),
            "PYTHONPATH": str(REPO),
            # Should a case wrongly start the service, it must not take a real port.
            "HTTP_PORT": "0",
            **env,
        }
        procs[case] = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    try:
        for case, proc in procs.items():
            out, err = proc.communicate(timeout=100)
            results[case] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def assert_one_line(code: int, out: str, err: str, name: str) -> None:
    """Exit code 2, nothing on stdout, one stderr line naming the variable."""
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(rf"\b{name}\b", lines[0]), lines[0]


@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_process_stops_with_one_line(startups: dict[str, tuple[int, str, str]], case: str) -> None:
    code, out, err = startups[case]
    assert_one_line(code, out, err, PROCESS_CASES[case][2])


def test_process_lines_read_well(startups: dict[str, tuple[int, str, str]]) -> None:
    assert startups["missing-key"][2].strip() == "wispbot: missing setting WISPHUB_API_KEY"
    assert startups["from-dotenv"][2].strip() == (
        "wispbot: invalid setting TIMEZONE: unknown time zone 'Mars/Olympus'"
    )
    for _code, _out, err in startups.values():
        assert KEY["WISPHUB_API_KEY"] not in err


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"WISPHUB_READ_TIMEOUT": "abc"}, "WISPHUB_READ_TIMEOUT"),
        ({"BUSINESS_HOURS": "nonsense"}, "BUSINESS_HOURS"),
        ({"TIMEZONE": "Mars/Olympus"}, "TIMEZONE"),
        ({"TELEGRAM_BOT_TOKEN": "bad"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "nope:SuperSecretValue123"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_WEBHOOK_SECRET": "not allowed!"}, "TELEGRAM_WEBHOOK_SECRET"),
        ({"WISPHUB_API_URL": "api.wisphub.net"}, "WISPHUB_API_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"HTTP_PORT": "99999"}, "HTTP_PORT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"WHATSAPP_API_URL": "graph"}, "WHATSAPP_API_URL"),
        # Valid alone, but webhook mode needs the bot token (checked as the service starts).
        (
            {"TELEGRAM_WEBHOOK_URL": "https://bot.example.com/webhooks/telegram"},
            "TELEGRAM_BOT_TOKEN",
        ),
        (
            {
                "TELEGRAM_BOT_TOKEN": "123456789:AAH-example_token_0123456789",
                "TELEGRAM_WEBHOOK_URL": "https://bot.example.com/webhooks/telegram",
            },
            "TELEGRAM_WEBHOOK_SECRET",
        ),
        ({"WISPHUB_API_KEY": ""}, "WISPHUB_API_KEY"),
    ],
)
def test_run_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    name: str,
) -> None:
    import bot.cli
    from bot.__main__ import main

    # The service would point the root logger at stderr; keep the test process's logging.
    monkeypatch.setattr(bot.cli, "setup_logging", lambda level, key: None)
    for key, value in {**KEY, "HTTP_PORT": "0", **env}.items():
        monkeypatch.setenv(key, value)
    code = main(["run"])
    out, err = capsys.readouterr()
    assert_one_line(code, out, err, name)
    for value in env.values():
        if "Secret" in value:
            assert value not in err


# -- README -----------------------------------------------------------------------------------
def test_operator_guide_names_real_metrics_and_settings() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    guide = readme.split("## Operator guide", 1)[1].split("\n## ", 1)[0]
    # The names a scrape of /metrics shows (labelled series appear only once observed).
    exposition = generate_latest(metrics.REGISTRY).decode()
    registered = set(re.findall(r"(?m)^# HELP (\S+) ", exposition))
    named = set(re.findall(r"\bwispbot_[a-z_]+\b", guide))
    assert named
    assert named <= registered, named - registered
    # Every variable the guide names is a real setting.
    env_like = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", guide))
    assert env_like
    assert env_like <= setting_names(), env_like - setting_names()
