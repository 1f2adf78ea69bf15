"""The WhatsApp Cloud API app's settings (``WHATSAPP_*``): the channel's own, so that it imports
nothing of the runtime's settings module (``bot.settings`` composes it)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# An empty value (``NAME=`` in .env, or passed through by docker compose) means "not set".
_ENV = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
)


class WhatsAppSettings(BaseSettings):
    """The WhatsApp Cloud API app."""

    model_config = SettingsConfigDict(env_prefix="WHATSAPP_", **_ENV)

    access_token: SecretStr | None = None
    phone_number_id: str | None = None
    app_secret: SecretStr | None = None
    verify_token: SecretStr | None = None
    api_url: AnyHttpUrl = AnyHttpUrl("https://graph.facebook.com/v21.0")
    # Approved message templates for notices outside the 24-hour window (issue 15); a notice
    # kind without one is not sent there (counted as skipped, never free text).
    template_outage_resolved: str | None = None
    template_ticket_update: str | None = None
    template_payment_reminder: str | None = None
    template_csat: str | None = None
    template_language: str = "es"

    @property
    def enabled(self) -> bool:
        """True when every value the channel needs is set."""
        return all((self.access_token, self.phone_number_id, self.app_secret, self.verify_token))

    @model_validator(mode="after")
    def _all_or_none(self) -> WhatsAppSettings:
        # Some set and some not is a mistake: the channel would silently stay off.
        values = {
            "WHATSAPP_ACCESS_TOKEN": self.access_token,
            "WHATSAPP_PHONE_NUMBER_ID": self.phone_number_id,
            "WHATSAPP_APP_SECRET": self.app_secret,
            "WHATSAPP_VERIFY_TOKEN": self.verify_token,
        }
        missing = [name for name, value in values.items() if value is None]
        if 0 < len(missing) < len(values):
            msg = (
                f"WhatsApp is half configured: missing {', '.join(missing)} "
                "(set all four WHATSAPP_* credentials, or none)"
            )
            raise ValueError(msg)
        return self
