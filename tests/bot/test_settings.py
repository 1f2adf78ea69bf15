"""Settings as an operator meets them: hours, money, URLs, secrets and the one-line errors."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import (
    BotSettings,
    SettingsError,
    TelegramSettings,
    load_settings,
    require,
)
from integrations.wisphub.settings import WispHubSettings

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


# -- business hours (parsed by flows.settings.BusinessHours: tests/flows/test_settings.py) ---
class TestBusinessHours:
    def test_settings_parse_hours_once_and_name_a_bad_value(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        settings = BotSettings(business_hours="sat 09:00-12:00")
        assert settings.hours.is_open(SAT, time(9, 0))
        assert not settings.hours.is_open(MON, time(9, 0))
        monkeypatch.setenv("BUSINESS_HOURS", "mon-fri 18:00-08:00")
        with pytest.raises(SettingsError, match=r"^invalid setting BUSINESS_HOURS: .*end"):
            load_settings()


# -- money ------------------------------------------------------------------------------------
class TestMoney:
    @pytest.mark.parametrize(
        ("amount", "shown"),
        [
            (89900, "$ 89.900"),
            (Decimal("89900.00"), "$ 89.900"),
            (1234567, "$ 1.234.567"),
            (999, "$ 999"),
            (0, "$ 0"),
            (-15000, "-$ 15.000"),
            (Decimal("-0.4"), "$ 0"),
            # Money rounds half up, as a customer would round it.
            (Decimal("89900.5"), "$ 89.901"),
            (89900.49, "$ 89.900"),
        ],
    )
    def test_isp_format_without_decimals(self, amount: Decimal | float, shown: str) -> None:
        assert BotSettings().money(amount) == shown

    def test_decimals_and_separators_are_settings(self) -> None:
        usd = BotSettings(currency="USD", locale="en_US", currency_decimals=2)
        assert usd.money(1234.5) == "$1,234.50"
        assert usd.money(Decimal("-0.005")) == "-$0.01"
        assert usd.money(7) == "$7.00"
        one = BotSettings(currency_decimals=1)
        assert one.money(Decimal("89900.25")) == "$ 89.900,3"

    def test_currency_settings_come_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CURRENCY", "PEN")
        monkeypatch.setenv("LOCALE", "es_PE")
        monkeypatch.setenv("CURRENCY_DECIMALS", "2")
        assert load_settings().bot.money(1500).replace("\xa0", " ") == "S/ 1,500.00"
        for name, value in (("CURRENCY", "PESOS"), ("LOCALE", "xx_YY")):
            monkeypatch.setenv(name, value)
            with pytest.raises(SettingsError, match=rf"^invalid setting {name}: "):
                load_settings()
            monkeypatch.delenv(name)
        monkeypatch.setenv("CURRENCY_DECIMALS", "3")
        with pytest.raises(SettingsError, match=r"^invalid setting CURRENCY_DECIMALS: "):
            load_settings()


# -- URLs -------------------------------------------------------------------------------------
class TestWispHubUrl:
    def test_default_base(self) -> None:
        assert str(WispHubSettings().api_url) == "https://api.wisphub.net/api/"

    @pytest.mark.parametrize(
        "given",
        ["https://api.wisphub.io/api", "https://api.wisphub.io/api/"],
    )
    def test_trailing_slash_is_added_once(self, given: str) -> None:
        # Without it WispHub redirects, and the redirect drops a POST body.
        assert str(WispHubSettings(api_url=given).api_url) == "https://api.wisphub.io/api/"

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WISPHUB_API_URL", "http://127.0.0.1:8099/api")
        assert str(load_settings().wisphub.api_url) == "http://127.0.0.1:8099/api/"

    def test_not_a_url_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WISPHUB_API_URL", "api.wisphub.net")
        with pytest.raises(SettingsError, match=r"^invalid setting WISPHUB_API_URL: "):
            load_settings()

    def test_ticket_subject_per_category(self) -> None:
        wisphub = WispHubSettings(subject_slow="Lentitud", priority_slow="1")
        assert wisphub.subject_for("slow") == ("Lentitud", "1")
        assert wisphub.subject_for("no_internet") == ("No Tiene Internet", "3")
        assert wisphub.subject_for("anything else") == ("Internet Intermitente", "2")


# -- secrets ----------------------------------------------------------------------------------
SECRETS = {
    "WISPHUB_API_KEY": "wh-key-7f3a9c1d2e",
    "TELEGRAM_BOT_TOKEN": "123456789:AAHsecretTOKENvalue_xyz-0123456789",
    "TELEGRAM_WEBHOOK_SECRET": "hook-secret_ABC123",
    "WHATSAPP_ACCESS_TOKEN": "EAAGsecretACCESStoken987",
    "WHATSAPP_APP_SECRET": "appsecret0a1b2c3d",
    "WHATSAPP_VERIFY_TOKEN": "verify-me-42",
}


class TestSecrets:
    def test_secrets_never_show_in_repr_str_or_dumps(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "10987")
        settings = load_settings()
        shown = "\n".join(
            [
                repr(settings),
                str(settings),
                settings.model_dump_json(),
                str(settings.model_dump()),
                *(repr(part) for part in vars(settings).values()),
                *(str(part) for part in vars(settings).values()),
            ]
        )
        for value in SECRETS.values():
            assert value not in shown
        # ...and yet the code can still read them.
        assert settings.wisphub.api_key is not None
        assert settings.wisphub.api_key.get_secret_value() == SECRETS["WISPHUB_API_KEY"]
        assert settings.whatsapp.enabled

    def test_a_rejected_secret_is_not_echoed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "not-a-token:SuperSecretValue123")
        with pytest.raises(SettingsError) as caught:
            load_settings()
        assert str(caught.value).startswith("invalid setting TELEGRAM_BOT_TOKEN: ")
        assert "SuperSecretValue123" not in str(caught.value)

    def test_whatsapp_needs_all_four_values(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert not load_settings().whatsapp.enabled
        monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", "token-value-secret")
        monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "10987")
        monkeypatch.setenv("WHATSAPP_APP_SECRET", "secret")
        # Half configured is one line naming what is missing (never the values given).
        with pytest.raises(SettingsError) as caught:
            load_settings()
        assert str(caught.value) == (
            "WhatsApp is half configured: missing WHATSAPP_VERIFY_TOKEN "
            "(set all four WHATSAPP_* credentials, or none)"
        )
        assert "token-value-secret" not in str(caught.value)
        monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "verify")
        assert load_settings().whatsapp.enabled


# -- Telegram webhook secret and token --------------------------------------------------------
class TestTelegram:
    @pytest.mark.parametrize("secret", ["a", "abc_DEF-123", "x" * 256])
    def test_webhook_secret_accepted(self, secret: str) -> None:
        settings = TelegramSettings(webhook_secret=secret)
        assert settings.webhook_secret is not None
        assert settings.webhook_secret.get_secret_value() == secret

    @pytest.mark.parametrize("secret", ["x" * 257, "has space", "a+b/c=", "contraseña", "a.b"])
    def test_webhook_secret_rejected(self, secret: str) -> None:
        # Telegram itself refuses other characters when the webhook is registered.
        with pytest.raises(ValidationError, match="1-256 characters"):
            TelegramSettings(webhook_secret=secret)

    def test_bad_webhook_secret_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "my secret!")
        with pytest.raises(SettingsError) as caught:
            load_settings()
        assert str(caught.value).startswith("invalid setting TELEGRAM_WEBHOOK_SECRET: ")
        assert "my secret!" not in str(caught.value)

    @pytest.mark.parametrize("token", ["bad", "123456", "abc:ABCDEFGHIJKL", "123:short"])
    def test_bot_token_shape(self, token: str) -> None:
        with pytest.raises(ValidationError, match="BotFather"):
            TelegramSettings(bot_token=token)

    @pytest.mark.parametrize(
        ("value", "ids"),
        [("5001", {5001}), (" 5001, 5002 ,", {5001, 5002}), ("", set()), (None, set())],
    )
    def test_agent_ids_are_a_comma_separated_list(
        self, monkeypatch: pytest.MonkeyPatch, value: str | None, ids: set[int]
    ) -> None:
        # Empty or unset: every member of the agents' group may act, as before the setting.
        if value is not None:
            monkeypatch.setenv("TELEGRAM_AGENT_IDS", value)
        assert load_settings().telegram.agent_ids == ids

    def test_webhook_url_must_be_http(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "ftp://bot.example.com/hook")
        with pytest.raises(SettingsError, match=r"^invalid setting TELEGRAM_WEBHOOK_URL: "):
            load_settings()


# -- loading ----------------------------------------------------------------------------------
class TestLoading:
    def test_defaults_without_any_environment(self) -> None:
        settings = load_settings()
        assert settings.bot.bot_language == "es"
        assert settings.bot.timezone == "America/Bogota"
        assert settings.bot.hours.always_open
        assert settings.bot.redis_url is None
        assert (settings.bot.http_host, settings.bot.http_port) == ("127.0.0.1", 8080)
        assert settings.wisphub.api_key is None
        assert settings.telegram.bot_token is None
        assert not settings.whatsapp.enabled

    def test_empty_values_mean_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # A copied .env.example, or compose passing `NAME=` through, must not fail start-up.
        for name in (
            "TELEGRAM_BOT_TOKEN",
            "TELEGRAM_AGENTS_CHAT_ID",
            "TELEGRAM_WEBHOOK_URL",
            "WISPHUB_TECHNICIAN_ID",
            "REDIS_URL",
            "HTTP_PORT",
        ):
            monkeypatch.setenv(name, "")
        settings = load_settings()
        assert settings.telegram.bot_token is None
        assert settings.telegram.agents_chat_id is None
        assert settings.telegram.webhook_url is None
        assert settings.wisphub.technician_id is None
        assert settings.bot.redis_url is None
        assert settings.bot.http_port == 8080

    def test_dotenv_file_in_the_working_directory_is_read(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        (tmp_path / ".env").write_text(
            'ISP_NAME="FibraNet Andes"\nLOG_LEVEL=debug\nTELEGRAM_AGENTS_CHAT_ID=-1001234\n',
            encoding="utf-8",
        )
        monkeypatch.setenv("ISP_NAME", "From the environment")
        settings = load_settings()
        # The real environment wins over the file; values are normalised.
        assert settings.bot.isp_name == "From the environment"
        assert settings.bot.log_level == "DEBUG"
        assert settings.telegram.agents_chat_id == -1001234

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("TIMEZONE", "Mars/Olympus"),
            ("BOT_LANGUAGE", "fr"),
            ("REDIS_URL", "http://127.0.0.1:6379"),
            ("DEFAULT_COUNTRY_CODE", "+57"),
            ("HTTP_PORT", "eighty"),
            ("WISPHUB_READ_TIMEOUT", "0"),
            ("WISPHUB_PRIORITY_SLOW", "5"),
            ("TELEGRAM_AGENTS_CHAT_ID", "agents"),
            ("TELEGRAM_AGENT_IDS", "5001,luis"),
            ("PROMISE_MAX_DAYS", "31"),
        ],
    )
    def test_one_line_names_the_bad_variable(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as caught:
            load_settings()
        message = str(caught.value)
        assert message.startswith(f"invalid setting {name}: ")
        assert "\n" not in message

    def test_overrides_per_concern(self) -> None:
        settings = load_settings(bot={"bot_language": "en"}, wisphub={"retries": 0})
        assert settings.bot.bot_language == "en"
        assert settings.wisphub.retries == 0

    def test_zone_is_usable(self) -> None:
        assert BotSettings(timezone="America/Lima").tz.key == "America/Lima"

    def test_require_names_a_missing_setting(self) -> None:
        with pytest.raises(SettingsError, match=r"^missing setting WISPHUB_API_KEY$"):
            require(None, "WISPHUB_API_KEY")
        with pytest.raises(SettingsError):
            require("", "X")
        require("value", "X")
