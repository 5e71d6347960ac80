"""Taxes by treatment in one company of a Tryton database, and the product category that
carries them.

A legal entity's company gets, when VAT-registered: its domestic tax ``VAT <n>%`` at its
standard rate (when above zero), two 0 % taxes ``Reverse charge`` and ``Outside the scope
of VAT``, and two sales tax rules (``account.tax.rule``) of the same names, each with a line
from the domestic tax to its 0 % tax. A customer's ``customer_tax_rule`` in that company
(:meth:`~.operations.TrytonOperations.upsert_projects`) then turns the domestic tax of the
product into the 0 % one. An entity that is not VAT-registered (a US company) has no tax at
all. The shared "Services" category carries each company's domestic tax among its customer
taxes (Tryton applies those of the invoice's company only) and each company's revenue
account (a company-dependent value).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.taxrules import TaxTreatment

if TYPE_CHECKING:
    from closeloop.connectors.tryton.setup import TrytonIds, TrytonSetup

CATEGORY = "Services"
ZERO_TAXES = {
    TaxTreatment.REVERSE_CHARGE: "Reverse charge",
    TaxTreatment.OUTSIDE_SCOPE: "Outside the scope of VAT",
}
"""The 0 % taxes, and the tax rules of the same names, by treatment."""


def vat_name(rate: Decimal) -> str:
    """The domestic tax's name for ``rate`` (a fraction): ``VAT 19%``, ``VAT 7.7%``."""
    return f"VAT {format((rate * 100).normalize(), 'f')}%"


def wanted_taxes(setup: TrytonSetup) -> dict[TaxTreatment, tuple[str, Decimal]]:
    """The taxes ``setup``'s company needs, ``{treatment: (name, rate)}``: none when it is
    not VAT-registered; the domestic one only at a rate above zero."""
    if not setup.vat_registered:
        return {}
    rate = setup.standard_rate
    domestic = {TaxTreatment.DOMESTIC: (vat_name(rate), rate)} if rate > 0 else {}
    return domestic | {t: (name, Decimal(0)) for t, name in ZERO_TAXES.items()}


def ensure_taxes(
    rpc: TrytonRPC, company: int, setup: TrytonSetup, tax_account: int
) -> dict[TaxTreatment, int]:
    """Create the taxes (:func:`wanted_taxes`) and tax rules company ``company`` lacks, and
    give each rule its line from the domestic tax to its 0 % tax; the taxes by treatment.
    Two reads, and a write only for what is missing."""
    wanted = wanted_taxes(setup)
    if not wanted:
        return {}
    names = {name: t for t, (name, _) in wanted.items()}
    rows = rpc.search_read(
        "account.tax", [["company", "=", company], ["name", "in", list(names)]], ["name"]
    )
    taxes = {names[r["name"]]: int(r["id"]) for r in rows}
    missing = [t for t in wanted if t not in taxes]
    if missing:
        created = rpc.create(
            "account.tax",
            [
                {
                    "name": wanted[t][0],
                    "description": wanted[t][0],
                    "type": "percentage",
                    "rate": wanted[t][1],
                    "company": company,
                    "invoice_account": tax_account,
                    "credit_note_account": tax_account,
                }
                for t in missing
            ],
        )
        taxes.update(zip(missing, created, strict=True))
    domestic = taxes.get(TaxTreatment.DOMESTIC)
    rules = rpc.search_read(
        "account.tax.rule",
        [["company", "=", company], ["name", "in", list(ZERO_TAXES.values())]],
        ["name", "lines.origin_tax", "lines.tax"],
    )
    found = {r["name"]: r for r in rules}
    new: list[dict[str, Any]] = []
    for treatment, name in ZERO_TAXES.items():
        line = {"origin_tax": domestic, "tax": taxes[treatment]}
        rule = found.get(name)
        if rule is None:
            new.append(
                {
                    "name": name,
                    "kind": "sale",
                    "company": company,
                    "lines": [["create", [line]]],
                }
            )
        elif not any(
            (existing.get("origin_tax"), existing.get("tax")) == (domestic, taxes[treatment])
            for existing in rule.get("lines.") or []
        ):
            rpc.write("account.tax.rule", [rule["id"]], {"lines": [["create", [line]]]})
    if new:
        rpc.create("account.tax.rule", new)
    return taxes


def ensure_category(rpc: TrytonRPC, company: int, revenue: int, domestic: int | None) -> int:
    """The "Services" category, made when missing, with company ``company``'s revenue
    account and its domestic tax as its only customer tax of that company (none when
    ``domestic`` is ``None``). At most three calls when nothing changes."""
    context = {"company": company}
    rows = rpc.search_read(
        "product.category",
        [["name", "=", CATEGORY]],
        ["account_revenue", "customer_taxes_used"],
        limit=1,
        context=context,
    )
    if not rows:
        values: dict[str, Any] = {"name": CATEGORY, "accounting": True, "account_revenue": revenue}
        if domestic is not None:
            values["customer_taxes"] = [["add", [domestic]]]
        return rpc.create("product.category", [values], context=context)[0]
    category = rows[0]
    current = set(category["customer_taxes_used"] or [])
    wanted = {domestic} if domestic is not None else set()
    change: dict[str, Any] = {}
    if category["account_revenue"] != revenue:
        change["account_revenue"] = revenue
    if current != wanted:
        change["customer_taxes"] = [
            *([["remove", sorted(current - wanted)]] if current - wanted else []),
            *([["add", sorted(wanted - current)]] if wanted - current else []),
        ]
    if change:
        rpc.write("product.category", [category["id"]], change, context=context)
    return int(category["id"])


def find_taxes(
    rpc: TrytonRPC, company: int
) -> tuple[dict[TaxTreatment, int], dict[TaxTreatment, int]]:
    """Company ``company``'s taxes and tax rules by treatment, without writing: the domestic
    tax is the "Services" category's customer tax of that company, the 0 % taxes and the
    rules are found by name. Three reads. A company without VAT has none of them."""
    taxes: dict[TaxTreatment, int] = {}
    category = rpc.search_read(
        "product.category",
        [["name", "=", CATEGORY]],
        ["customer_taxes_used"],
        limit=1,
        context={"company": company},
    )
    used = category[0]["customer_taxes_used"] if category else []
    if used:
        taxes[TaxTreatment.DOMESTIC] = int(used[0])
    by_name = {name: t for t, name in ZERO_TAXES.items()}
    for row in rpc.search_read(
        "account.tax", [["company", "=", company], ["name", "in", list(by_name)]], ["name"]
    ):
        taxes[by_name[row["name"]]] = int(row["id"])
    rules = {
        by_name[r["name"]]: int(r["id"])
        for r in rpc.search_read(
            "account.tax.rule",
            [["company", "=", company], ["name", "in", list(by_name)]],
            ["name"],
        )
    }
    return taxes, rules


def apply_tax_treatments(
    rpc: TrytonRPC,
    ids: TrytonIds,
    treatments: dict[str, TaxTreatment],
    parties: dict[str, tuple[int, int | None]],
) -> None:
    """Set each customer's ``customer_tax_rule`` in company ``ids.company`` (the session's
    company) to its treatment's rule (none for ``domestic`` and ``no_vat``; the company's
    "Reverse charge" or "Outside the scope of VAT" rule): ``treatments`` by party code,
    ``parties`` ``{code: (id, current rule)}``. One write per distinct rule some customer
    lacks. Raises ``LookupError``, writing nothing, when the company has no rule for a
    treatment."""
    wanted: dict[str, int | None] = {}
    for code, treatment in treatments.items():
        if treatment in (TaxTreatment.DOMESTIC, TaxTreatment.NO_VAT):
            wanted[code] = None
        elif treatment in ids.tax_rules:
            wanted[code] = ids.tax_rules[treatment]
        else:
            raise LookupError(
                f"company {ids.entity} has no tax rule for {treatment.value} (is it "
                "VAT-registered? run `closeloop tryton init`)"
            )
    changes: dict[int | None, list[int]] = {}
    for code, rule in wanted.items():
        party, current = parties[code]
        if current != rule:
            changes.setdefault(rule, []).append(party)
    for rule, party_ids in changes.items():
        rpc.write("party.party", sorted(party_ids), {"customer_tax_rule": rule})
