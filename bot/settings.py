"""Settings, one pydantic-settings class per concern, read from the environment and ``.env``.

``load_settings()`` validates everything at start-up; a missing or invalid value raises
``SettingsError`` whose message is one line naming the environment variable.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.numbers import list_currencies
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.channels.whatsapp.settings import WhatsAppSettings
from flows.settings import BusinessHours, DialogSettings, Money, TicketMapping
from integrations.wisphub.settings import WispHubSettings

# An empty value (``NAME=`` in .env, or passed through by docker compose) means "not set": the
# copied .env.example leaves optional secrets and ids empty, and those must not fail validation.
_ENV = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it in one line."""


class TelegramSettings(BaseSettings):
    """The Telegram bot and the agents' forum supergroup."""

    model_config = SettingsConfigDict(env_prefix="TELEGRAM_", **_ENV)

    bot_token: SecretStr | None = None
    api_url: AnyHttpUrl = AnyHttpUrl("https://api.telegram.org")
    agents_chat_id: int | None = None
    webhook_url: AnyHttpUrl | None = None
    webhook_secret: SecretStr | None = None
    # Outgoing pacing, Telegram's published limits by default; 0 turns a limit off (a local Bot
    # API server, the benchmark's fake). Seconds between messages to one chat, on average.
    chat_interval: float = Field(default=1.0, ge=0)
    global_rate: float = Field(default=30.0, ge=0)  # messages a second over all chats
    # Telegram user ids who may act in the agents' topics (relay to customers, /cerrar,
    # /ticket), comma-separated; empty: every member of the agents' group.
    agent_ids: Annotated[frozenset[int], NoDecode] = frozenset()

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(r"\d+:[\w-]{10,}", v.get_secret_value()):
            raise ValueError("expected the BotFather token form 123456:ABC-...")
        return v

    @field_validator("agent_ids", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, v: SecretStr | None) -> SecretStr | None:
        # Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and -.
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", v.get_secret_value()):
            raise ValueError("1-256 characters of A-Z, a-z, 0-9, _ and -")
        return v


class BotSettings(BaseSettings):
    """The conversation: language, the ISP, hours, and how long things last."""

    model_config = SettingsConfigDict(**_ENV)

    bot_language: Literal["es", "en"] = "es"
    isp_name: str = ""  # empty: the greeting names no company
    timezone: str = "America/Bogota"
    business_hours: str = ""
    default_country_code: str = Field(default="57", pattern=r"^\d{1,4}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The secret behind the logs' conversation pseudonyms (bot/logs.py); WISPHUB_API_KEY's when
    # unset. Changing it (or that key) changes every pseudonym.
    log_key: SecretStr | None = None
    redis_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Seconds a client has to send a request's headers (also how long an idle connection stays
    # open), and then its body; open connections beyond the cap are answered 503 and closed.
    http_read_timeout: float = Field(default=10.0, gt=0)
    http_max_connections: int = Field(default=1000, ge=1)
    # /readyz answers 503 naming a channel whose every send failed for this many seconds.
    ready_send_window: float = Field(default=60.0, gt=0)
    session_ttl: int = Field(default=7 * 24 * 3600, gt=0)
    session_idle_reset: int = Field(default=30 * 60, gt=0)
    verified_ttl: int = Field(default=15 * 60, gt=0)
    handoff_timeout: int = Field(default=10 * 60, gt=0)
    # An agent's message reaches the customer signed with the agent's first name.
    agent_name_shown: bool = True
    # A customer whose relays wait this long for the agents' group (20 messages a minute) is
    # told once that the agents are slow.
    relay_slow_seconds: int = Field(default=60, gt=0)
    promise_max_days: int = Field(default=5, ge=1, le=30)
    lockout_attempts: int = Field(default=3, ge=1)
    lookup_attempts: int = Field(default=5, ge=1)  # documents and unknown phones a chat looks up
    lockout_document_attempts: int = Field(default=5, ge=1)  # wrong names on one document, any chat
    lockout_seconds: int = Field(default=30 * 60, gt=0)
    rate_limit_per_minute: int = Field(default=30, ge=1)
    # Written by the ISP: how to pay (accounts, agents, links), shown with WispHub's payment
    # methods (flows/payment_methods.py); empty: WispHub's list alone.
    payment_methods_text: str = ""
    # Money as customers read it (Babel): the ISP's currency (ISO 4217) and the locale whose
    # number format it uses; an English conversation uses the same country in English.
    currency: str = Field(default="COP", pattern=r"^[A-Z]{3}$")
    locale: str = "es_CO"
    # Notices the bot sends first (issue 15): the polls' interval, and a cut-off reminder's lead.
    notify_enabled: bool = True
    notify_poll_seconds: int = Field(default=300, ge=1)
    reminder_days_before: int = Field(default=2, ge=0, le=30)
    currency_decimals: int = Field(default=0, ge=0, le=2)
    # Whether WispHub's payment promise reactivates a suspended service until its date.
    promise_reactivates: bool = True
    # A folder of the ISP's own free-text examples (es.yaml / en.yaml), learned with the shipped
    # ones at start-up (flows/understand); unset: the shipped examples alone.
    understanding_examples: Path | None = None

    @field_validator("understanding_examples")
    @classmethod
    def _examples_folder(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_dir():
            raise ValueError("expected a folder holding es.yaml and/or en.yaml")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {v!r}") from err
        return v

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, v: str) -> str:
        try:
            Locale.parse(v)
        except (UnknownLocaleError, ValueError) as err:
            raise ValueError(f"unknown locale {v!r}; expected e.g. es_CO") from err
        return v

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        if v not in list_currencies():
            raise ValueError(f"unknown currency {v!r}; expected an ISO 4217 code such as COP")
        return v

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        BusinessHours.parse(v)
        return v

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(redis|rediss|unix|redis\+sentinel)://", v):
            raise ValueError("expected redis://, rediss://, unix:// or redis+sentinel://")
        return v

    @cached_property
    def tz(self) -> ZoneInfo:
        """The ISP's time zone."""
        return ZoneInfo(self.timezone)

    @cached_property
    def hours(self) -> BusinessHours:
        """The parsed business hours."""
        return BusinessHours.parse(self.business_hours)

    def money(self, amount: Decimal | float | int) -> str:
        """Format an amount the ISP's way: ``$ 89.900``."""
        return self.money_format(amount)

    @cached_property
    def money_format(self) -> Money:
        """The ISP's money format."""
        return Money(self.currency, self.locale, self.currency_decimals)


class Settings(BaseModel):
    """Every concern's settings, validated together."""

    bot: BotSettings
    wisphub: WispHubSettings
    telegram: TelegramSettings
    whatsapp: WhatsAppSettings

    @property
    def log_secret(self) -> str | None:
        """The secret the logs' pseudonym key is derived from: LOG_KEY, else WISPHUB_API_KEY."""
        secret = self.bot.log_key or self.wisphub.api_key
        return secret.get_secret_value() if secret is not None else None

    def dialog(self) -> DialogSettings:
        """The slice the dialog reads (no secrets)."""
        bot, wisphub = self.bot, self.wisphub
        categories = (
            *("no_internet", "slow", "intermittent", "other"),
            *("payment", "cancel_service", "move", "change_plan"),
        )
        tickets = TicketMapping(
            subjects={c: wisphub.subject_for(c) for c in categories},
            department=wisphub.department,
            origin=wisphub.report_origin,
            technician_id=wisphub.technician_id,
        )
        return DialogSettings(
            tickets=tickets,
            language=bot.bot_language,
            isp_name=bot.isp_name,
            tz=bot.tz,
            hours=bot.hours,
            money=bot.money_format,
            session_idle_reset=bot.session_idle_reset,
            verified_ttl=bot.verified_ttl,
            handoff_timeout=bot.handoff_timeout,
            agent_name_shown=bot.agent_name_shown,
            promise_max_days=bot.promise_max_days,
            payment_methods_text=bot.payment_methods_text,
            promise_reactivates=bot.promise_reactivates,
            lockout_attempts=bot.lockout_attempts,
            lookup_attempts=bot.lookup_attempts,
            lockout_document_attempts=bot.lockout_document_attempts,
            lockout_seconds=bot.lockout_seconds,
        )


_PREFIX = {"bot": "", "wisphub": "WISPHUB_", "telegram": "TELEGRAM_", "whatsapp": "WHATSAPP_"}


def _one_line(prefix: str, err: ValidationError) -> str:
    first = err.errors()[0]
    # The first part of the location is the field; later parts are union or item details.
    loc = first["loc"]
    # One line even if a validator's message spans several.
    reason = " ".join(first["msg"].removeprefix("Value error, ").split())
    if not loc:  # a check across fields: its message names them
        return reason
    name = (prefix + str(loc[0])).upper()
    return f"invalid setting {name}: {reason}"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate all settings; raise ``SettingsError`` naming the first bad one.

    ``overrides`` maps a concern (``bot``, ``wisphub``, ...) to a dict of field values.
    """
    parts: dict[str, Any] = {}
    classes: dict[str, type[BaseSettings]] = {
        "bot": BotSettings,
        "wisphub": WispHubSettings,
        "telegram": TelegramSettings,
        "whatsapp": WhatsAppSettings,
    }
    for name, cls in classes.items():
        try:
            parts[name] = cls(**overrides.get(name, {}))
        except ValidationError as err:
            raise SettingsError(_one_line(_PREFIX[name], err)) from None
    return Settings(**parts)


def require(value: object, name: str) -> None:
    """Stop start-up with one line when a setting the chosen command needs is empty."""
    if value is None or value == "":
        msg = f"missing setting {name}"
        raise SettingsError(msg)
