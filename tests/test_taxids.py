"""Tax ids validated with python-stdnum for the account's country."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from closeloop.domain.canonical import Account
from closeloop.domain.taxids import validate_tax_id

VALID = [
    ("DE", "DE 136 695 976", "eu_vat", "DE136695976"),
    ("FR", "FR40303265045", "eu_vat", "FR40303265045"),
    ("NL", "004495445B01", "eu_vat", "NL004495445B01"),
    ("IT", "IT00743110157", "eu_vat", "IT00743110157"),
    ("ES", "ES B-58378431", "eu_vat", "ESB58378431"),
    ("BE", "BE0403019261", "eu_vat", "BE0403019261"),
    ("GR", "094259216", "eu_vat", "EL094259216"),
    ("GB", "GB 980 7806 84", "gb_vat", "980780684"),
    ("US", "04-2103594", "us_ein", "042103594"),
    ("CH", "CHE-100.155.212", "ch_uid", "CHE100155212"),
    ("AU", "83 914 571 673", "au_abn", "83914571673"),
    ("NO", "NO 995 525 828 MVA", "no_mva", "995525828MVA"),
]

INVALID = [
    ("DE", "DE136695977", "checksum"),
    ("FR", "FR123", "length"),
    ("NL", "NL004495446B01", "checksum"),
    ("NL", "NL004495445X01", "format"),
    ("IT", "IT00743110158", "checksum"),
    ("GB", "GB980780685", "checksum"),
    ("US", "00-2103594", "component"),
    ("CH", "CHE-100.155.213", "checksum"),
    ("AU", "83 914 571 674", "checksum"),
    ("DE", "FR40303265045", "not of the account's country DE"),
]


@pytest.mark.parametrize(("country", "raw", "scheme", "compact"), VALID)
def test_valid_ids_are_accepted_and_compacted(
    country: str, raw: str, scheme: str, compact: str
) -> None:
    assert validate_tax_id(raw, country) == (scheme, compact)


@pytest.mark.parametrize(("country", "raw", "rule"), INVALID)
def test_invalid_ids_name_the_rule(country: str, raw: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule) as info:
        validate_tax_id(raw, country)
    assert repr(raw) in str(info.value)


def test_an_account_reports_every_bad_tax_id_under_its_field() -> None:
    with pytest.raises(ValidationError) as info:
        Account(
            legal_name="Acme SARL",
            country="France",
            currency="EUR",
            tax_ids=["FR40303265045", "FR123", "DE136695976"],
        )
    (error,) = info.value.errors()
    assert error["loc"] == ("tax_ids",)
    assert "[1] 'FR123' is not a valid EU VAT number for FR" in error["msg"]
    assert "[2] 'DE136695976' is an EU VAT number of DE" in error["msg"]


def test_an_account_normalises_its_tax_ids() -> None:
    account = Account(
        legal_name="Acme GmbH", country="DE", currency="eur", tax_ids=["de 136 695 976"]
    )
    assert [(t.scheme, t.value) for t in account.tax_ids] == [("eu_vat", "DE136695976")]
    assert account.currency == "EUR"


def test_unknown_scheme_and_country_without_scheme() -> None:
    with pytest.raises(ValueError, match="unknown tax id scheme"):
        validate_tax_id("123", "DE", "de_steuernummer")
    with pytest.raises(ValueError, match="no tax id scheme is known for country BR"):
        validate_tax_id("123", "BR")


def test_tax_id_forms_cover_how_systems_store_them() -> None:
    from closeloop.domain.taxids import tax_id_forms

    assert tax_id_forms("CHE100155212", "CH") >= {"CHE100155212", "CHE-100.155.212"}
    assert "DE136695976" in tax_id_forms("de 136 695 976", "DE")
    assert tax_id_forms("not-a-vat", "DE") == {"not-a-vat", "NOTAVAT"}  # invalid: no formatting
