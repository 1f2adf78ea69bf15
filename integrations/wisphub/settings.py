"""How to reach the ISP's WispHub Net tenant and how tickets are filed there (``WISPHUB_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# An empty value (``NAME=`` in .env, or passed through by docker compose) means "not set".
_ENV = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
)


class WispHubSettings(BaseSettings):
    """How to reach the ISP's WispHub Net tenant and how tickets are filed there."""

    model_config = SettingsConfigDict(env_prefix="WISPHUB_", **_ENV)

    api_url: AnyHttpUrl = AnyHttpUrl("https://api.wisphub.net/api/")
    api_key: SecretStr | None = None
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=8.0, gt=0)
    retries: int = Field(default=2, ge=0, le=5)
    page_size: int = Field(default=200, ge=1, le=1000)
    max_concurrency: int = Field(default=16, ge=1)
    client_cache_ttl: float = Field(default=60.0, ge=0)
    catalog_cache_ttl: float = Field(default=3600.0, ge=0)
    ping_deadline: float = Field(default=12.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)  # failed calls in a row that open the circuit
    breaker_reset: float = Field(default=30.0, gt=0)  # seconds before a probe call is let through
    # Ticket filing: the ISP's subject catalogue differs per tenant, so the mapping is a setting.
    subject_no_internet: str = "No Tiene Internet"
    subject_slow: str = "Internet Lento"
    subject_intermittent: str = "Internet Intermitente"
    # WispHub refuses a subject outside its catalogue, which has no "Otro": a general one of it.
    subject_other: str = "Internet Intermitente"
    # "Ya pagué y sigo sin servicio" and the plan change request (flows/payment_report.py,
    # flows/service_request.py); cancellation and moving use the catalogue's own subjects.
    subject_payment: str = "Reconexión"
    subject_plan_change: str = "Cambio de Plan"
    priority_no_internet: Literal["1", "2", "3", "4"] = "3"
    priority_slow: Literal["1", "2", "3", "4"] = "2"
    priority_intermittent: Literal["1", "2", "3", "4"] = "2"
    priority_other: Literal["1", "2", "3", "4"] = "2"
    department: str = "Soporte Técnico"
    technician_id: int | None = None  # used when the client record names no technician
    report_origin: str = "redes_sociales"

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, v: AnyHttpUrl) -> AnyHttpUrl:
        # WispHub redirects paths without a trailing slash and the redirect drops a POST body.
        text = str(v)
        return v if text.endswith("/") else AnyHttpUrl(text + "/")

    def subject_for(self, category: str) -> tuple[str, str]:
        """Subject and priority for one of the bot's ticket categories (faults and requests)."""
        table = {
            "no_internet": (self.subject_no_internet, self.priority_no_internet),
            "slow": (self.subject_slow, self.priority_slow),
            "intermittent": (self.subject_intermittent, self.priority_intermittent),
            # Priorities as the subject catalogue gives them (Reconexión: Alta; the rest: Baja).
            "payment": (self.subject_payment, "3"),
            "cancel_service": ("Cancelación", "1"),
            "move": ("Cambio de Domicilio", "1"),
            "change_plan": (self.subject_plan_change, "1"),
        }
        return table.get(category, (self.subject_other, self.priority_other))
