"""Base of the canonical models: strict, versioned, JSON-schema exportable."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from closeloop.domain.money import to_decimal
from closeloop.domain.taxids import country_code


class Canonical(BaseModel):
    """A canonical record. Subclasses set ``CANONICAL_TYPE`` and ``SCHEMA_VERSION``.

    Bump ``SCHEMA_VERSION`` whenever the JSON Schema changes: a test compares every schema
    with the fingerprints in ``schema_fingerprints.json`` and fails when one changed under
    the same version.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    CANONICAL_TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1


def _quantity(value: Any) -> Decimal:
    return to_decimal(value)


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


Quantity = Annotated[Decimal, BeforeValidator(_quantity), AfterValidator(_non_negative)]
"""A non-negative decimal quantity (hours, units); floats refused, strings and ints accepted."""

CountryCode = Annotated[str, AfterValidator(country_code)]
"""ISO 3166-1 alpha-2; English names are accepted and normalised ('Germany' -> 'DE')."""


def _currency(value: str) -> str:
    from closeloop.domain.money import minor_unit

    code = value.upper()
    minor_unit(code)
    return code


CurrencyCode = Annotated[str, AfterValidator(_currency)]
"""ISO 4217 code with a minor unit ('EUR', 'JPY')."""


def _ref_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Ref = Annotated[str, BeforeValidator(_ref_text), AfterValidator(lambda v: v if v else _blank())]
"""A reference to another record (its canonical or source id, numeric ids as text); never
blank."""


def _blank() -> str:
    raise ValueError("reference must not be blank")
