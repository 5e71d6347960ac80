"""Tax identifiers (VAT, EIN, UID, ABN, ...) validated with python-stdnum for a country."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pycountry
from pydantic import BaseModel, ConfigDict, model_validator
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.util import clean

EU_VAT_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
"""Member states whose VAT numbers the EU VIES scheme covers (Greece is 'EL' in VAT numbers)."""

# scheme -> (python-stdnum module, what a person calls it)
_SCHEMES: dict[str, tuple[str, str]] = {
    "gb_vat": ("stdnum.gb.vat", "GB VAT number"),
    "us_ein": ("stdnum.us.ein", "US EIN"),
    "ch_uid": ("stdnum.ch.uid", "Swiss UID"),
    "ch_vat": ("stdnum.ch.vat", "Swiss VAT number"),
    "au_abn": ("stdnum.au.abn", "Australian ABN"),
    "ca_bn": ("stdnum.ca.bn", "Canadian business number"),
    "no_mva": ("stdnum.no.mva", "Norwegian MVA number"),
    "nz_ird": ("stdnum.nz.ird", "New Zealand IRD number"),
    "in_gstin": ("stdnum.in_.gstin", "Indian GSTIN"),
}

_DEFAULT_SCHEME = {
    "GB": "gb_vat",
    "US": "us_ein",
    "CH": "ch_uid",
    "AU": "au_abn",
    "CA": "ca_bn",
    "NO": "no_mva",
    "NZ": "nz_ird",
    "IN": "in_gstin",
}


_RULES = {
    "InvalidChecksum": "checksum",
    "InvalidLength": "length",
    "InvalidFormat": "format",
    "InvalidComponent": "component",
}
"""python-stdnum's exception classes, as the rule a person reads."""


def country_code(value: str) -> str:
    """ISO 3166-1 alpha-2 code for a code or an English country name ('Germany' -> 'DE').

    Raises ``ValueError`` when pycountry does not know it.
    """
    try:
        return str(pycountry.countries.lookup(value.strip()).alpha_2)
    except LookupError:
        raise ValueError(f"{value!r} is not an ISO 3166 country code or name") from None


def default_scheme(country: str) -> str:
    """The tax id scheme a business in ``country`` (alpha-2) uses by default.

    Raises ``ValueError`` for a country with no scheme known here.
    """
    if country in EU_VAT_COUNTRIES:
        return "eu_vat"
    try:
        return _DEFAULT_SCHEME[country]
    except KeyError:
        raise ValueError(f"no tax id scheme is known for country {country}") from None


def _module(scheme: str) -> tuple[ModuleType, str]:
    if scheme == "eu_vat":
        return eu_vat, "EU VAT number"
    try:
        path, label = _SCHEMES[scheme]
    except KeyError:
        known = ", ".join(["eu_vat", *sorted(_SCHEMES)])
        raise ValueError(f"unknown tax id scheme {scheme!r} (known: {known})") from None
    return importlib.import_module(path), label


def tax_id_forms(value: str, country: str) -> set[str]:
    """The ways a system may have stored a tax id: as given, compact, and formatted the
    scheme's way (python-stdnum ``format``: ``CHE-100.155.212`` for ``CHE100155212``). An
    id that is not valid for ``country`` gives only the first two."""
    compact = "".join(ch for ch in value if ch.isalnum()).upper()
    forms = {value.strip(), compact}
    try:
        scheme, checked = validate_tax_id(value, country)
    except ValueError:
        return forms
    module, _ = _module(scheme)
    forms.add(checked)
    formatter = getattr(module, "format", None)
    if callable(formatter):
        forms.add(str(formatter(checked)))
    return forms


def validate_tax_id(value: str, country: str, scheme: str | None = None) -> tuple[str, str]:
    """Check ``value`` as a tax id of ``country``; returns ``(scheme, compact value)``.

    EU VAT numbers get the country prefix when it is missing (Greece: ``EL``) and must carry
    the account's country. Raises ``ValueError`` naming the scheme and the rule that failed
    (python-stdnum's message: checksum, length, format, component).
    """
    scheme = scheme or default_scheme(country)
    module, label = _module(scheme)
    text = str(value).strip()
    if scheme == "eu_vat":
        prefix = "EL" if country == "GR" else country
        compact = clean(text, " -./").upper().strip()
        if not compact[:2].isalpha():
            text = prefix + compact
        elif compact[:2] != prefix:
            raise ValueError(
                f"{value!r} is an EU VAT number of {compact[:2]}, not of the account's country "
                f"{country}"
            )
    try:
        return scheme, str(module.validate(text))
    except StdnumError as exc:
        rule = _RULES.get(type(exc).__name__, "validity")
        raise ValueError(
            f"{value!r} is not a valid {label} for {country} ({rule} check: {exc})"
        ) from None


class TaxId(BaseModel):
    """A tax identifier: ``{"scheme": "eu_vat", "value": "DE136695976"}``.

    Given as a bare string, the scheme is left for the owning record (an account) to infer
    from its country; :class:`~closeloop.domain.model.Account` validates every tax id.
    """

    model_config = ConfigDict(frozen=True)

    value: str
    scheme: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"value": data} if isinstance(data, str) else data
