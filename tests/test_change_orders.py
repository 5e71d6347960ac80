"""Change orders (issue 15, first piece): a new version of a mobilized deal compared with what
was mobilized; changes to apply, conflicts with what was billed, fields ignored with a reason."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.domain.change_orders import ChangeKind, EngagementTerms, compare, rate_on

SIGNED = date(2026, 10, 15)
BASE: dict[str, Any] = {
    "rates": {"Analyst": Decimal("95"), "Principal": Decimal("220")},
    "hours": {"Analyst": Decimal("80"), "Principal": Decimal("40")},
    "currency": "EUR",
    "legal_entity": "DE-GMBH",
    "customer": "001A",
    "start_date": date(2026, 9, 1),
    "end_date": date(2026, 12, 31),
    "name": "ERP rollout",
}


def terms(**changes: Any) -> EngagementTerms:
    return EngagementTerms.model_validate({**BASE, **changes})


def test_the_same_terms_change_nothing() -> None:
    assert compare(terms(), terms(), SIGNED).empty


def test_a_new_role_a_raise_more_hours_and_a_later_end_are_changes() -> None:
    amended = terms(
        rates={**BASE["rates"], "Principal": Decimal("240"), "Partner": Decimal("260")},
        hours={**BASE["hours"], "Analyst": Decimal("120"), "Partner": Decimal("10")},
        end_date=date(2027, 3, 31),
    )
    order = compare(terms(), amended, SIGNED, invoiced_through=date(2026, 9, 30))
    assert not order.conflicts
    kinds = [(c.kind, c.role) for c in order.changes]
    assert kinds == [
        (ChangeKind.ROLE_ADDED, "Partner"),
        (ChangeKind.RATE_CHANGED, "Principal"),
        (ChangeKind.HOURS_CHANGED, "Analyst"),
        (ChangeKind.END_DATE_CHANGED, None),
    ]
    raise_ = order.changes[1]
    assert (raise_.before, raise_.after, raise_.effective_from) == ("220", "240", SIGNED)
    # time before the effective date keeps the old rate
    assert rate_on(SIGNED - timedelta(days=1), Decimal("220"), raise_) == Decimal("220")
    assert rate_on(SIGNED, Decimal("220"), raise_) == Decimal("240")


def test_a_rate_cut_on_invoiced_time_is_a_conflict_but_not_after_it() -> None:
    cut = terms(rates={**BASE["rates"], "Analyst": Decimal("90")})
    order = compare(terms(), cut, date(2026, 9, 15), invoiced_through=date(2026, 9, 30))
    (conflict,) = order.conflicts
    assert conflict.field == "rates.Analyst" and "invoiced at 95" in conflict.reason
    assert not order.changes  # not applied half
    later = compare(terms(), cut, date(2026, 10, 1), invoiced_through=date(2026, 9, 30))
    assert not later.conflicts and later.changes[0].kind is ChangeKind.RATE_CHANGED


def test_a_removed_role_with_invoiced_time_stays_for_a_person() -> None:
    dropped = terms(rates={"Principal": Decimal("220")}, hours={"Principal": Decimal("40")})
    order = compare(terms(), dropped, SIGNED, invoiced_roles=frozenset({"Analyst"}))
    assert [c.field for c in order.conflicts] == ["rates.Analyst"] and not order.changes
    free = compare(terms(), dropped, SIGNED)
    assert [(c.kind, c.role) for c in free.changes] == [(ChangeKind.ROLE_REMOVED, "Analyst")]


@pytest.mark.parametrize(
    ("field", "value"),
    [("currency", "USD"), ("legal_entity", "GB-LTD"), ("customer", "001B")],
)
def test_currency_entity_and_customer_of_a_mobilized_engagement_do_not_change(
    field: str, value: str
) -> None:
    order = compare(terms(), terms(**{field: value}), SIGNED)
    (conflict,) = order.conflicts
    assert conflict.field == field and "cannot change" in conflict.reason


def test_fields_that_touch_no_project_are_ignored_with_a_reason() -> None:
    order = compare(terms(), terms(name="ERP rollout, phase 2", sow_reference="SOW-9"), SIGNED)
    assert not order.changes and not order.conflicts
    assert set(order.ignored) == {"name", "sow_reference"} and all(order.ignored.values())


roles = st.sampled_from(["Analyst", "Consultant", "Principal", "Partner"])
rates = st.dictionaries(
    roles, st.decimals(min_value=50, max_value=300, places=0), min_size=1, max_size=4
)


@given(rates, rates, st.booleans())
def test_every_role_difference_is_accounted_for_once(
    before: dict[str, Decimal], after: dict[str, Decimal], billed: bool
) -> None:
    invoiced = frozenset(before) if billed else frozenset()
    through = date(2026, 12, 31) if billed else None
    order = compare(
        terms(rates=before, hours={}),
        terms(rates=after, hours={}),
        SIGNED,
        invoiced_through=through,
        invoiced_roles=invoiced,
    )
    seen = [c.role for c in order.changes] + [c.field.split(".")[1] for c in order.conflicts]
    differing = {r for r in set(before) | set(after) if before.get(r) != after.get(r)}
    assert sorted(seen) == sorted(differing)  # each once: applied or left to a person
    keys = [c.key() for c in order.changes]
    assert len(keys) == len(set(keys))
