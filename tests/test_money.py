"""Money: ISO 4217 currencies, minor-unit rounding, no floats, exact allocation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from closeloop.domain.money import CurrencyMismatchError, Money, minor_unit, total

amounts = st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=2)
currencies = st.sampled_from(["EUR", "USD", "GBP", "CHF", "JPY", "BHD", "AUD", "NZD"])


@pytest.mark.parametrize(("code", "places"), [("EUR", 2), ("JPY", 0), ("BHD", 3), ("usd", 2)])
def test_minor_units_come_from_iso_4217(code: str, places: int) -> None:
    assert minor_unit(code) == places


@pytest.mark.parametrize("code", ["XXX1", "EURO", "XAU", ""])
def test_unknown_or_unitless_currencies_are_refused(code: str) -> None:
    with pytest.raises(ValidationError):
        Money.of("1", code)


def test_amounts_round_half_even_to_the_minor_unit() -> None:
    assert Money.of("10.005", "EUR").amount == Decimal("10.00")
    assert Money.of("10.015", "EUR").amount == Decimal("10.02")
    assert Money.of("1234.5", "JPY").amount == Decimal("1234")
    assert Money.of("1.0005", "BHD").amount == Decimal("1.000")
    assert str(Money.of(7, "usd")) == "7.00 USD"


def test_floats_and_non_numbers_are_refused() -> None:
    with pytest.raises(ValidationError, match="floats are not accepted"):
        Money(amount=0.1, currency="EUR")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not a number"):
        Money.of("ten", "EUR")
    with pytest.raises(ValidationError, match="not a finite"):
        Money.of("Infinity", "EUR")


def test_currencies_do_not_mix() -> None:
    with pytest.raises(CurrencyMismatchError, match="EUR and USD"):
        _ = Money.of(1, "EUR") + Money.of(1, "USD")
    with pytest.raises(CurrencyMismatchError):
        total([Money.of(1, "EUR"), Money.of(1, "GBP")], "EUR")


def test_rate_times_hours_rounds_once() -> None:
    rate = Money.of("133.33", "EUR")
    assert rate * Decimal("7.5") == Money.of("999.98", "EUR")  # 999.975 -> half even
    assert Decimal("0.25") * Money.of("10", "JPY") == Money.of("2", "JPY")


@given(a=amounts, b=amounts, currency=currencies)
def test_addition_and_subtraction_are_exact(a: Decimal, b: Decimal, currency: str) -> None:
    x, y = Money.of(a, currency), Money.of(b, currency)
    assert (x + y) - y == x
    assert x - x == Money.zero(currency)
    assert x + (-x) == Money.zero(currency)


@given(
    amount=amounts,
    currency=currencies,
    ratios=st.lists(st.integers(0, 100), min_size=1, max_size=12).filter(lambda r: sum(r) > 0),
)
def test_allocation_loses_nothing_and_is_fair(
    amount: Decimal, currency: str, ratios: list[int]
) -> None:
    money = Money.of(amount, currency)
    parts = money.allocate(ratios)
    assert total(parts, currency) == money
    unit = Decimal(1).scaleb(-minor_unit(currency))
    for part, ratio in zip(parts, ratios, strict=True):
        ideal = money.amount * ratio / sum(ratios)
        assert abs(part.amount - ideal) <= unit


def test_allocation_needs_ratios() -> None:
    with pytest.raises(ValueError, match="not all zero"):
        Money.of(10, "EUR").allocate([0, 0])
