"""Money: Decimal amounts in an ISO 4217 currency, rounded to the currency's minor unit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import pycountry
from iso4217 import Currency as Iso4217
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from closeloop.domain.errors import InputError

ROUNDING = ROUND_HALF_EVEN
"""Banker's rounding, as Tryton's ``currency.round`` does (trytond ``currency.py``)."""


class CurrencyMismatchError(InputError):
    """Arithmetic between amounts of two currencies."""


@lru_cache(maxsize=512)
def minor_unit(currency: str) -> int:
    """Decimal places of ``currency`` (ISO 4217 exponent: EUR 2, JPY 0, BHD 3).

    Raises ``ValueError`` for a code pycountry does not know, or one without a minor unit
    (precious metals, funds codes such as XAU).
    """
    code = currency.upper()
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    try:
        exponent = Iso4217(code).exponent
    except ValueError:
        exponent = None
    if exponent is None:
        raise ValueError(f"{code} has no minor unit: it cannot denominate an invoice amount")
    return int(exponent)


def to_decimal(value: Any) -> Decimal:
    """A finite Decimal from a Decimal, int or numeric string.

    Floats are refused (``ValueError``): binary floats cannot hold most decimal amounts;
    send amounts as strings. Raises ``ValueError`` for text that is not a number.
    """
    if isinstance(value, bool | float):
        raise ValueError("floats are not accepted for amounts: send a decimal string")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


def round_to_currency(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded half-even to ``currency``'s minor unit."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUNDING)


class Money(BaseModel):
    """An amount in a currency: ``{"amount": "1234.50", "currency": "EUR"}``.

    The amount is rounded (half-even) to the currency's minor unit on creation. Adding or
    subtracting two currencies raises :class:`CurrencyMismatchError`. Multiplying by a
    quantity (hours, a rate) rounds the result once.
    """

    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Decimal:
        return to_decimal(value)

    @field_validator("currency", mode="before")
    @classmethod
    def _code(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("currency must be an ISO 4217 code such as 'EUR'")
        code = value.strip().upper()
        minor_unit(code)
        return code

    @model_validator(mode="after")
    def _round(self) -> Money:
        rounded = round_to_currency(self.amount, self.currency)
        if rounded != self.amount or str(rounded) != str(self.amount):
            object.__setattr__(self, "amount", rounded)
        return self

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        """``Money(amount=amount, currency=currency)``."""
        return cls(amount=amount, currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Zero in ``currency``."""
        return cls.of(0, currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"{self.currency} and {other.currency} cannot be combined")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money.of(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money.of(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money.of(-self.amount, self.currency)

    def __mul__(self, factor: Decimal | int | str) -> Money:
        return Money.of(self.amount * to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def allocate(self, ratios: Sequence[Decimal | int]) -> list[Money]:
        """Split into parts proportional to ``ratios`` that add up exactly to this amount.

        Each part is rounded down to the minor unit; the remaining units go one each to the
        first parts. Raises ``ValueError`` when ratios are empty, negative or sum to zero.
        """
        weights = [to_decimal(r) for r in ratios]
        total = sum(weights, Decimal(0))
        if not weights or any(w < 0 for w in weights) or total == 0:
            raise ValueError("ratios must be non-negative and not all zero")
        unit = Decimal(1).scaleb(-minor_unit(self.currency))
        units = int((self.amount / unit).to_integral_value())
        shares = [int(units * w // total) for w in weights]
        sign = 1 if units >= 0 else -1
        for i in range(abs(units - sum(shares))):
            shares[i % len(shares)] += sign
        return [Money.of(unit * s, self.currency) for s in shares]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


def total(amounts: Iterable[Money], currency: str) -> Money:
    """The sum of ``amounts`` (zero in ``currency`` when empty); all must be in ``currency``."""
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result
