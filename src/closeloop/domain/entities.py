"""Legal entities (the firm's selling companies) and the exchange rates their ERP converts
invoices in other currencies with.

A :class:`LegalEntity` is configuration (``legal_entities:`` in ``closeloop.yaml``): the
company that sells a deal, in its country and currency, with what the tax rules need of it
(:class:`~closeloop.domain.taxrules.SellingEntity`) and the currencies it may invoice in.
An :class:`ExchangeRate` is one dated rate of a currency against the rates' base currency,
with its source (``rates:`` in the configuration or a rates file, see
:func:`read_rates_file`); the hub never makes one up.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from closeloop.domain.errors import InputError
from closeloop.domain.money import minor_unit
from closeloop.domain.taxids import country_code
from closeloop.domain.taxrules import SellingEntity


def _currency(value: str) -> str:
    code = str(value).strip().upper()
    minor_unit(code)  # ValueError for what is not an ISO 4217 currency
    return code


class LegalEntity(SellingEntity):
    """A selling company: ``code`` (how deals and configuration name it, e.g. ``DE-GMBH``),
    legal ``name``, ``country`` (ISO 3166 alpha-2), functional ``currency`` (ISO 4217),
    VAT registration and standard rate (a fraction, ``0.19``), and the currencies it may
    invoice in (``invoice_currencies``; its own currency always among them)."""

    name: str = Field(min_length=1)
    currency: str
    invoice_currencies: tuple[str, ...] = ()

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return country_code(value)

    @field_validator("currency")
    @classmethod
    def _own_currency(cls, value: str) -> str:
        return _currency(value)

    @field_validator("invoice_currencies")
    @classmethod
    def _currencies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_currency(c) for c in value)

    @model_validator(mode="after")
    def _rate_when_registered(self) -> LegalEntity:
        if self.vat_registered and self.standard_rate == 0:
            raise ValueError(
                f"{self.code} is VAT-registered: give its standard_rate (0.19 for 19 %), or "
                "vat_registered: false"
            )
        return self

    def can_invoice(self, currency: str) -> bool:
        """Whether the entity may invoice in ``currency``."""
        return currency.upper() in {self.currency, *self.invoice_currencies}


class UnknownEntityError(InputError):
    """A deal names a legal entity the configuration does not have, or none at all."""


def entity_problem(
    code: str | None, currency: str | None, entities: Mapping[str, LegalEntity]
) -> str | None:
    """Why a deal of entity ``code`` in ``currency`` cannot be invoiced, in words a finance
    person can act on; ``None`` when it can."""
    if not entities:
        return None
    if not (code or "").strip():
        return (
            "the deal names no selling legal entity; set it on the opportunity "
            f"(configured: {', '.join(sorted(entities))})"
        )
    entity = entities.get(str(code).strip())
    if entity is None:
        return (
            f"the legal entity {code!r} is not configured (configured: "
            f"{', '.join(sorted(entities))}); fix the opportunity or add the entity"
        )
    if currency and not entity.can_invoice(currency):
        allowed = ", ".join(sorted({entity.currency, *entity.invoice_currencies}))
        return (
            f"{entity.code} cannot invoice in {currency} (it invoices in {allowed}); change "
            "the deal's currency or add it to the entity's invoice_currencies"
        )
    return None


class ExchangeRate(BaseModel):
    """``rate`` units of ``currency`` for one unit of the base currency, from ``valid_from``
    on (until the next rate), as published by ``source`` (e.g. the ECB reference rates)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str
    valid_from: date
    rate: Decimal = Field(gt=0)
    source: str = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _code(cls, value: str) -> str:
        return _currency(value)


class RatesConfig(BaseModel):
    """Exchange rates for the ERP: ``base`` currency (rate 1), rates given inline and/or a
    CSV ``file`` (:func:`read_rates_file`)."""

    model_config = ConfigDict(extra="forbid")

    base: str = "EUR"
    file: Path | None = None
    rates: tuple[ExchangeRate, ...] = ()

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        return _currency(value)

    def all_rates(self) -> list[ExchangeRate]:
        """The inline rates and the file's, sorted by (date, currency); the base currency
        gets rate 1 on every date another currency has a rate (Tryton converts through both
        currencies' rates). Raises :class:`~closeloop.domain.errors.InputError` naming the
        file line of a bad row, or a currency with two rates on one date."""
        rates = list(self.rates) + (read_rates_file(self.file) if self.file else [])
        seen: dict[tuple[str, date], ExchangeRate] = {}
        for rate in rates:
            key = (rate.currency, rate.valid_from)
            if key in seen and seen[key].rate != rate.rate:
                raise InputError(
                    f"two rates for {rate.currency} on {rate.valid_from}: "
                    f"{seen[key].rate} ({seen[key].source}) and {rate.rate} ({rate.source})"
                )
            seen[key] = rate
        for valid_from in {d for _, d in seen}:
            seen.setdefault(
                (self.base, valid_from),
                ExchangeRate(
                    currency=self.base, valid_from=valid_from, rate=Decimal(1), source="base"
                ),
            )
        return sorted(seen.values(), key=lambda r: (r.valid_from, r.currency))


def read_rates_file(path: Path) -> list[ExchangeRate]:
    """Rates from a CSV file with the header ``date,currency,rate,source`` (``date`` ISO
    8601, ``rate``: units of ``currency`` per unit of the base currency). Raises
    :class:`~closeloop.domain.errors.InputError` naming the line of a bad row; nothing of
    the file is taken then."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the rates file {path}: {exc.strerror}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = {"date", "currency", "rate", "source"} - set(reader.fieldnames or ())
    if missing:
        raise InputError(f"{path}: the header lacks {', '.join(sorted(missing))}")
    rates = []
    for number, row in enumerate(reader, start=2):
        try:
            rates.append(
                ExchangeRate(
                    currency=row["currency"],
                    valid_from=date.fromisoformat((row["date"] or "").strip()),
                    rate=Decimal((row["rate"] or "").strip()),
                    source=(row["source"] or "").strip(),
                )
            )
        except (ValidationError, ValueError, ArithmeticError) as exc:
            raise InputError(f"{path}, line {number}: {exc}") from None
    return rates
