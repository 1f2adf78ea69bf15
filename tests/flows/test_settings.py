"""The dialog's settings slice: business hours, money, the ticket mapping, and the slice the
runtime builds from its settings (no secrets in it)."""

from __future__ import annotations

from datetime import time
from decimal import Decimal

import pytest
from pydantic import SecretStr

from bot.channels.whatsapp.settings import WhatsAppSettings
from bot.settings import BotSettings, Settings, TelegramSettings
from flows.settings import BusinessHours, Money
from integrations.wisphub.settings import WispHubSettings

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


class TestBusinessHours:
    def test_weekdays_and_saturday_morning(self) -> None:
        hours = BusinessHours.parse("mon-fri 08:00-18:00; sat 08:00-13:00")
        assert not hours.always_open
        assert hours.is_open(MON, time(8, 0))
        assert hours.is_open(WED, time(12, 30))
        assert hours.is_open(FRI, time(17, 59))
        assert hours.is_open(SAT, time(12, 59))
        # The end is exclusive; before the start is closed; Sunday is not listed.
        assert not hours.is_open(FRI, time(18, 0))
        assert not hours.is_open(TUE, time(7, 59))
        assert not hours.is_open(SAT, time(13, 0))
        assert not hours.is_open(SUN, time(10, 0))

    def test_empty_means_always_open(self) -> None:
        for text in ("", "  ", ";"):
            hours = BusinessHours.parse(text)
            assert hours.always_open
            assert hours.is_open(SUN, time(3, 0))

    def test_two_spans_a_day_close_for_lunch(self) -> None:
        hours = BusinessHours.parse("mon 08:00-12:00; mon 14:00-18:00")
        assert hours.is_open(MON, time(11, 0))
        assert not hours.is_open(MON, time(13, 0))
        assert hours.is_open(MON, time(14, 0))

    def test_case_spacing_and_single_digit_hours(self) -> None:
        hours = BusinessHours.parse("  MON-Fri   8:00-9:30 ")
        assert hours.is_open(THU, time(9, 29))
        assert not hours.is_open(THU, time(9, 30))

    def test_a_range_may_wrap_past_sunday(self) -> None:
        hours = BusinessHours.parse("fri-mon 10:00-14:00")
        assert [hours.is_open(day, time(11, 0)) for day in range(7)] == [
            True,
            False,
            False,
            False,
            True,
            True,
            True,
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "nonsense",
            "mon-fri",
            "mon-fri 18:00-08:00",
            "mon-fri 08:00-08:00",
            "xyz 08:00-10:00",
            "mon-xyz 08:00-10:00",
            "mon-fri 8-18",
            "mon-fri 08:00-25:00",
            "mon-fri 08:00-18:00, sat 08:00-13:00",
        ],
    )
    def test_unreadable_hours_are_rejected(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"."):
            BusinessHours.parse(text)


def test_money_rounds_half_up_in_the_isps_format() -> None:
    assert Money()(Decimal("89899.5")) == "$ 89.900"
    assert Money("USD", "en_US", 2)(1234.5) == "$1,234.50"


@pytest.mark.parametrize(
    ("money", "lang", "shown"),
    [
        (Money(), "es", "$ 89.900"),  # Spanish writes the sign apart (RAE; Colombian bills)
        (Money(), "en", "COP 89,900"),  # never "$ 89.900" to an English reader: a code
        (Money("USD", "en_US", 2), "en", "$89,900.00"),
        (Money("USD", "en_US", 2), "es", "$ 89,900.00"),  # es_US: the country's separators
        (Money("PEN", "es_PE", 2), "en", "PEN 89,900.00"),
        (Money("MXN", "es_MX"), "es", "$ 89,900"),
    ],
)
def test_money_follows_the_language_currency_and_locale(
    money: Money, lang: str, shown: str
) -> None:
    assert money(89900, lang) == shown


def test_the_dialogs_slice_carries_the_settings_and_no_secret() -> None:
    settings = Settings(
        bot=BotSettings(business_hours="sat 09:00-12:00", isp_name="Fibra Andina"),
        wisphub=WispHubSettings(api_key=SecretStr("k3y-not-for-the-dialog"), technician_id=4),
        telegram=TelegramSettings(),
        whatsapp=WhatsAppSettings(),
    )
    dialog = settings.dialog()
    assert dialog.isp_name == "Fibra Andina"
    assert dialog.hours.is_open(SAT, time(9, 0))
    assert dialog.money(89900) == "$ 89.900"
    assert dialog.tickets.subject_for("slow") == settings.wisphub.subject_for("slow")
    assert dialog.tickets.subject_for("nonsense") == settings.wisphub.subject_for("other")
    assert dialog.tickets.technician_id == 4
    assert "k3y-not-for-the-dialog" not in repr(dialog)
