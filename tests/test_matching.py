"""Customer matching rules (mdm.matching): tax id first, then name and address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from closeloop.mdm.matching import Party, compact_tax_id, match_customer, normalize_name, similarity

ACME = Party("P1", "Acme Consulting GmbH", "DE", ("DE136695976",), "Hauptstr. 5", "Berlin", "10115")
BETA = Party("P2", "Beta Systems AG", "DE", (), "Ringweg 2", "Munich", "80331")
ACME_UK = Party("P3", "Acme Consulting Ltd", "GB", (), "1 High St", "London", "EC1A 1BB")


def test_tax_id_decides_first_whatever_the_name() -> None:
    deal = Party("001", "ACME (old name)", "DE", ("DE 136 695 976",))
    result = match_customer(deal, [BETA, ACME, ACME_UK])
    assert (result.kind, result.match) == ("tax_id", ACME)
    assert "by tax id" in result.explain()


def test_two_erp_customers_with_one_tax_id_are_ambiguous() -> None:
    twin = Party("P9", "Acme Consult", "DE", ("DE136695976",))
    result = match_customer(Party("001", "Acme", "DE", ("DE136695976",)), [ACME, twin])
    assert result.kind == "ambiguous" and {p.id for p, _ in result.candidates} == {"P1", "P9"}


def test_similar_name_and_address_in_the_same_country_match() -> None:
    deal = Party("001", "ACME Consulting", "DE", (), "Hauptstrasse 5", "Berlin", "10115")
    result = match_customer(deal, [BETA, ACME, ACME_UK])
    assert result.kind == "similar" and result.match == ACME and result.score >= 85
    assert "score" in result.explain()


def test_another_country_never_matches_by_name() -> None:
    deal = Party("001", "Acme Consulting", "GB", (), "", "Manchester", "M1 1AA")
    result = match_customer(deal, [ACME])
    assert result.kind == "none" and similarity(deal, ACME) == 0.0


def test_near_ties_are_left_to_a_person() -> None:
    one = Party("P4", "Northwind Traders", "US", (), "", "Seattle", "")
    two = Party("P5", "Northwind Trader", "US", (), "", "Seattle", "")
    result = match_customer(
        Party("001", "Northwind Traders Inc", "US", (), "", "Seattle"), [one, two]
    )
    assert result.kind == "ambiguous" and len(result.candidates) == 2


def test_nothing_close_is_no_match() -> None:
    deal = Party("001", "Zephyr Analytics", "DE", (), "", "Hamburg", "20095")
    assert match_customer(deal, [ACME, BETA]).kind == "none"


def test_normalization() -> None:
    assert normalize_name("Société Générale S.A.") == "societe generale"
    assert compact_tax_id("gb 980 7806 84") == "GB980780684"


@given(st.text(min_size=1, max_size=40), st.sampled_from(["DE", "US", "GB"]))
def test_a_party_matches_itself_by_name(name: str, country: str) -> None:
    party = Party("x", name, country)
    assert similarity(party, party) == 100.0
    assert match_customer(party, [party]).kind in ("similar", "none")
    if normalize_name(name):
        assert match_customer(party, [party]).kind == "similar"
