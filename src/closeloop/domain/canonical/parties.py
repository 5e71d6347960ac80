"""Accounts, contacts and people."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from closeloop.domain.canonical.base import Canonical, CountryCode, CurrencyCode, Ref
from closeloop.domain.money import Money
from closeloop.domain.taxids import TaxId, validate_tax_id

Email = Annotated[
    str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254, to_lower=True)
]


class Address(Canonical):
    """A postal address; ``country`` is ISO 3166-1 alpha-2."""

    CANONICAL_TYPE = "address"
    line1: str | None = None
    line2: str | None = None
    city: str = Field(min_length=1)
    postal_code: str | None = None
    region: str | None = None
    country: CountryCode


class Account(Canonical):
    """A customer: the legal entity the firm contracts with and invoices.

    Every tax id must be valid for ``country`` (python-stdnum); a bare tax id gets the
    country's default scheme (EU VAT in member states, GB VAT, US EIN, CH UID, AU ABN, ...).
    """

    CANONICAL_TYPE = "account"
    legal_name: str = Field(min_length=1, max_length=255)
    trading_name: str | None = None
    legal_entity: str | None = Field(default=None, description="the firm's selling subsidiary")
    billing_address: Address | None = None
    country: CountryCode
    tax_ids: tuple[TaxId, ...] = ()
    currency: CurrencyCode
    payment_terms_days: int = Field(default=30, ge=0, le=365)

    @field_validator("tax_ids")
    @classmethod
    def _tax_ids_for_country(
        cls, tax_ids: tuple[TaxId, ...], info: ValidationInfo
    ) -> tuple[TaxId, ...]:
        country = info.data.get("country")
        if country is None:  # the country itself is invalid: reported on its own
            return tax_ids
        checked, problems = [], []
        for position, tax_id in enumerate(tax_ids):
            try:
                scheme, value = validate_tax_id(tax_id.value, country, tax_id.scheme)
            except ValueError as exc:
                problems.append(f"[{position}] {exc}")
                continue
            checked.append(TaxId(scheme=scheme, value=value))
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(checked)


class Contact(Canonical):
    """A person at a customer."""

    CANONICAL_TYPE = "contact"
    account: Ref | None = None
    first_name: str | None = None
    last_name: str = Field(min_length=1)
    email: Email | None = None
    phone: str | None = None
    title: str | None = None


class Person(Canonical):
    """A consultant (employee or contractor) who logs time."""

    CANONICAL_TYPE = "person"
    name: str = Field(min_length=1)
    email: Email | None = None
    employee_number: str | None = None
    active: bool = True
    cost_rate: Money | None = None
    default_role: str | None = None
