"""Reading the final state back from Salesforce, Harvest and Tryton after a project-to-cash
run, and checking it against the firm that was seeded (for the end-to-end tests)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from closeloop.connectors.harvest.client import HarvestClient
from closeloop.connectors.salesforce.client import SalesforceClient
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.devtools.demo.entities import legal_entities
from closeloop.devtools.demo.firm import Firm
from closeloop.domain.entities import LegalEntity
from closeloop.domain.money import minor_unit
from closeloop.domain.taxrules import TaxDecision, TaxTreatment, decide
from closeloop.ports.store import ExceptionRow
from tests.billing_support import (
    charges_expected,
    check_billing,
    current_rates,
    held_milestones,
    rate_on,
)

CENT = Decimal("0.01")
QUICK_WORKER = {
    "poll_interval_s": 0.5,
    "retry_base_delay_s": 0.05,
    "retry_max_delay_s": 1.0,
    "lease_s": 30,
    "idle_wait_s": 0.05,
}
"""A worker that reacts within a second (the end-to-end tests' hubs)."""


def time_to_cash_config(home: Path, data: dict[str, Any], name: str) -> Path:
    """``data`` (a ``closeloop.yaml``) with the four time-and-materials flows and
    :data:`QUICK_WORKER`, written as ``home/<name>``; its path."""
    data["flows"] = {"mobilize": {}, "bill_time": {}, "invoice": {"settle_s": 1}, "status_back": {}}
    data["worker"] = dict(QUICK_WORKER)
    path = home / name
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class FinalState:
    """What each system holds at the end."""

    deals: dict[str, dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    projects: dict[str, dict[str, Any]]
    rates: dict[str, dict[str, float]]
    entries: list[dict[str, Any]]
    lines: dict[str, list[dict[str, Any]]]  # by Harvest entry id
    invoices: dict[str, Any]  # by reference
    parties: list[dict[str, Any]]
    details: dict[str, dict[str, Any]]  # by reference: company, comment, taxes
    expenses: list[dict[str, Any]]  # Harvest's


def read_back(
    sf: SalesforceClient, hv: HarvestClient, entities: dict[str, TrytonOperations], firm: Firm
) -> FinalState:
    """Everything the checks need, straight from the systems' APIs (of the ERP, only what
    belongs to ``firm``: other tests may share it; ``entities``: a session per company)."""
    ops = next(iter(entities.values()))
    money = (
        "Invoiced_Amount__c, Paid_Amount__c, Outstanding_Amount__c, Last_Invoice_Number__c, "
        "Payment_Status__c, Overdue_Amount__c, Days_Past_Due__c"
    )
    mobilization = (
        "Mobilization_Status__c, Mobilization_Message__c, ERP_Customer_Id__c, "
        "PSA_Project_Id__c, ERP_Project_Id__c"
    )
    deals = {
        r["Id"]: r
        for page in sf.query(f"SELECT Id, AccountId, {mobilization}, {money} FROM Opportunity")
        for r in page["records"]
    }
    accounts = {
        r["Id"]: r
        for page in sf.query(
            f"SELECT Id, CurrencyIsoCode, Billing_By_Currency__c, {money} FROM Account"
        )
        for r in page["records"]
    }
    projects = {p["code"]: p for p in hv.list_all("projects")[0] if p.get("code")}
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    for assignment in hv.list_all("task_assignments")[0]:
        rates[str(assignment["project"]["id"])][assignment["task"]["name"]] = assignment[
            "hourly_rate"
        ]
    entries = hv.list_all("time_entries")[0]
    rows = ops.rpc.search_read(
        "timesheet.line",
        [["description", "like", "%[cl:harvest-%"]],
        ["description", "duration", "work.name", "invoice_line.invoice.reference"],
    )
    entry_ids = {str(e["id"]) for e in entries}
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        entry_id = row["description"].rsplit("[cl:harvest-", 1)[1].rstrip("]")
        if entry_id in entry_ids:  # Harvest ids are unique across accounts, as in Harvest
            lines[entry_id].append(row)
    ours = tuple(f"SF-{deal_id}/" for deal_id in firm.deals)
    invoices = {
        str(i.reference): i
        for company in entities.values()  # each entity's company keeps its own invoices
        for i in company.read_invoices([["reference", "like", "SF-%"]])
        if str(i.reference).startswith(ours)
    }
    details = {
        r["reference"]: r
        for r in ops.rpc.search_read(
            "account.invoice",
            [["reference", "in", sorted(invoices)]],
            [
                "reference",
                "company.party.code",
                "comment",
                "party_tax_identifier.code",
                "taxes.description",
                "taxes.amount",
                "lines.taxes",
                "lines.description",
                "lines.quantity",
                "lines.unit_price",
                "lines.amount",
            ],
        )
    }
    parties = ops.rpc.search_read(
        "party.identifier", [["type", "!=", None]], ["code", "party.code"]
    )  # every tax id in the ERP: no test may leave two parties with one
    spent = hv.list_all("expenses")[0]
    return FinalState(
        deals, accounts, projects, rates, entries, lines, invoices, parties, details, spent
    )


def _reference(line: dict[str, Any]) -> str | None:
    """The reference of the invoice that billed a timesheet line read back."""
    reference = ((line.get("invoice_line.") or {}).get("invoice.") or {}).get("reference")
    return str(reference) if reference else None


def billable(firm: Firm, entry: dict[str, Any]) -> bool:
    """Whether ``entry`` must end up billed exactly once: approved, on a mobilized (not
    provisional) engagement, and not after finance closed its project."""
    deal_id = (
        str(entry["project"]["code"] or "").removeprefix("SF-") if entry.get("project") else ""
    )
    if not entry["is_closed"] or deal_id == firm.needs_approval:
        return False
    closed_on = firm.finance_closes.get(deal_id)
    return closed_on is None or date.fromisoformat(entry["spent_date"]) <= closed_on


def expected_tax(firm: Firm, deal_id: str) -> TaxDecision:
    """The treatment of a deal's invoices by the default rule table, decided here from the
    firm's own data (entity, account's country, whether it has a VAT number)."""
    info = firm.deals[deal_id]
    account = next(a for a in firm.salesforce["Account"] if a["Id"] == info["account"])
    entity = LegalEntity.model_validate(
        {"code": info["entity"], **legal_entities()[info["entity"]]}
    )
    return decide(entity, account["BillingCountry"], bool(account.get("Tax_Id__c")))


def period_of(reference: str) -> str:
    """The billing period an invoice reference bills: ``SF-<deal>/2026-11`` for itself and
    its follow-ups (``.../2026-11/2``); a fee, a milestone or a credit note names its own."""
    return re.sub(r"/\d+$", "", reference)


def check_period_amounts(
    firm: Firm,
    final: FinalState,
    time: dict[str, Decimal],
    charged: dict[str, Decimal],
) -> None:
    """Each billing period's invoices (the first and its follow-ups) bill, untaxed, the time
    on them (``time``: hours x rates, by the invoice reference its lines are on) plus the
    charges expected of the period (``charged``: by period, see
    :func:`~tests.billing_support.charges_expected`), and the tax of the deal's treatment on
    that (Tryton rounds each invoice line's tax). How a period's charges spread over its
    follow-ups depends on when its time arrived (late time of a retainer month shrinks the
    next month's allowance, billed on that month's follow-up); what they sum to does not."""
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for reference, amount in time.items():
        expected[period_of(reference)] += amount
    for period, amount in charged.items():
        expected[period] += amount
    billed: dict[str, list[str]] = defaultdict(list)
    for reference, invoice in final.invoices.items():
        if not invoice.is_credit_note:
            billed[period_of(reference)].append(reference)
    assert set(expected) == set(billed), set(expected) ^ set(billed)
    assert set(time) <= {r for refs in billed.values() for r in refs}
    for period, references in billed.items():
        deal_id = period.split("/")[0].removeprefix("SF-")
        currency = firm.deals[deal_id]["currency"]
        unit = Decimal(1).scaleb(-minor_unit(currency))
        invoices = [final.invoices[r] for r in references]
        lines = [line for r in references for line in final.details[r].get("lines.") or []]
        said = (period, invoices, lines)
        untaxed = sum((i.untaxed_amount for i in invoices), Decimal(0))
        assert untaxed == expected[period].quantize(unit), (expected[period], said)
        tax = sum((i.tax_amount for i in invoices), Decimal(0))
        tax_due = expected[period] * expected_tax(firm, deal_id).rate
        assert abs(tax - tax_due) <= unit * len(lines), (tax_due, said)


def check(
    firm: Firm,
    final: FinalState,
    exceptions: list[ExceptionRow],
    today: date | None = None,
) -> None:
    """Assert the end state of a quarter: see the module docstring of the e2e test.
    ``today``: the day the hub last saw (invoices due before it and unpaid are overdue)."""
    today = today or datetime.now(UTC).date()
    codes = {e["id"]: e for e in final.entries}
    assert codes, "no time was logged"
    # every valid deal mobilized once, the blocked ones say why
    for deal_id in firm.deals:
        deal = final.deals[deal_id]
        if deal_id in firm.blocked:
            assert deal["Mobilization_Status__c"] == "Blocked", deal
            assert firm.blocked[deal_id] in deal["Mobilization_Message__c"], deal
            continue
        expected = "Provisional" if deal_id == firm.needs_approval else "Mobilized"
        assert deal["Mobilization_Status__c"] == expected, deal
        project = final.projects[f"SF-{deal_id}"]
        assert deal["PSA_Project_Id__c"] == str(project["id"])
        rates = current_rates(firm, deal_id)
        assert final.rates[str(project["id"])] == {r: float(v) for r, v in rates.items()}
    assert len(final.projects) == len(firm.valid_deals)  # one project per deal, no more
    # no duplicated customer: each tax id belongs to one ERP party
    ours = {str(a["Tax_Id__c"]) for a in firm.salesforce["Account"] if a.get("Tax_Id__c")}
    owners: dict[str, set[str]] = defaultdict(set)
    for identifier in final.parties:
        code = re.sub(r"\W", "", identifier["code"]).upper()
        if code in ours:
            owners[code].add(identifier["party."]["code"])
    assert owners, "no customer of the firm in the ERP"
    assert all(len(parties) == 1 for parties in owners.values()), owners
    for customer in firm.erp_customers:  # matched, not created again
        for deal_id, info in firm.deals.items():
            if info["account"] == customer["account"] and deal_id not in firm.blocked:
                assert final.deals[deal_id]["ERP_Customer_Id__c"] == customer["code"], deal_id
    # every approved billable hour recorded exactly once, at the rate card's rate
    for entry in final.entries:
        recorded = final.lines.get(str(entry["id"]), [])
        if billable(firm, entry):
            assert len(recorded) == 1, entry
            hours = Decimal(str(recorded[0]["duration"].total_seconds() / 3600))
            assert hours.quantize(CENT) == Decimal(str(entry["hours"])).quantize(CENT)
        else:
            assert recorded == [], entry
    # invoices: all posted, in the deal's entity and currency, totals of hours x rates plus
    # the tax of the deal's treatment, due after the deal's terms; every line invoiced (but
    # those of a deal whose currency has no exchange rate: they wait, as an exception)
    amounts: dict[str, Decimal] = defaultdict(Decimal)  # the time, by invoice reference
    waiting = set()
    for entry_id, recorded in final.lines.items():
        entry = codes[int(entry_id)]
        deal_id = entry["project"]["code"].removeprefix("SF-")
        line = recorded[0]
        reference = ((line.get("invoice_line.") or {}).get("invoice.") or {}).get("reference")
        if deal_id in firm.no_rate:
            assert not reference, (
                f"{deal_id} was invoiced in {firm.no_rate[deal_id]} without a rate"
            )
            waiting.add(deal_id)
            continue
        if firm.method(deal_id) != "time_and_materials":  # recorded for cost, never billed
            assert not reference, (entry_id, reference)
            continue
        assert reference, f"time entry {entry_id} recorded but never invoiced"
        day = date.fromisoformat(entry["spent_date"])
        amounts[reference] += Decimal(str(entry["hours"])) * rate_on(
            firm, deal_id, entry["task"]["name"], day
        )
    check_period_amounts(firm, final, amounts, charges_expected(firm, final, today))
    for reference, invoice in final.invoices.items():
        deal_id = reference.split("/")[0].removeprefix("SF-")
        info, detail = firm.deals[deal_id], final.details[reference]
        tax = expected_tax(firm, deal_id)
        assert invoice.state in ("posted", "paid"), invoice
        assert detail["company."]["party."]["code"] == info["entity"], (reference, detail)
        assert invoice.currency == info["currency"], (reference, invoice)
        if invoice.is_credit_note:  # checked with the invoice it credits (billing_support)
            continue
        assert invoice.total_amount == invoice.untaxed_amount + invoice.tax_amount
        described = " ".join(t["description"] or "" for t in detail.get("taxes.") or [])
        if tax.treatment is TaxTreatment.REVERSE_CHARGE:
            assert "Article 196" in (detail["comment"] or ""), detail
            account = next(a for a in firm.salesforce["Account"] if a["Id"] == info["account"])
            assert account["Tax_Id__c"] in (detail["comment"] or ""), detail
            assert "reverse charge" in described.lower(), detail
        elif tax.treatment is TaxTreatment.OUTSIDE_SCOPE:
            assert "outside the scope" in described.lower(), detail
        elif tax.treatment is TaxTreatment.NO_VAT:
            assert not detail.get("taxes."), detail
        else:
            assert "reverse charge" not in (detail["comment"] or "").lower(), detail
        assert invoice.invoice_date and invoice.due_date == invoice.invoice_date + timedelta(
            days=info["terms"]
        ), (reference, invoice.due_date)
    assert waiting == set(firm.no_rate) & set(firm.valid_deals), waiting
    # write-back: each deal shows its invoices' sums in its currency; each account in its own
    # currency, every currency listed beside
    by_deal: dict[str, list[Any]] = defaultdict(list)
    for reference, invoice in final.invoices.items():
        by_deal[reference.split("/")[0].removeprefix("SF-")].append(invoice)
    by_account: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    overdue_accounts = set()
    for deal_id, invoices in by_deal.items():
        deal = final.deals[deal_id]
        total = sum((i.total_amount for i in invoices), Decimal(0))
        due = sum((i.amount_to_pay for i in invoices), Decimal(0))
        credited = {i.credited_reference for i in invoices if i.is_credit_note}
        late = [
            i
            for i in invoices
            if i.amount_to_pay > 0 and i.due_date < today and i.reference not in credited
        ]
        overdue = sum((i.amount_to_pay for i in late), Decimal(0))
        # invoiced, outstanding and the last invoice number: reconciliation (final_check)
        assert Decimal(str(deal["Overdue_Amount__c"] or 0)).quantize(CENT) == overdue, deal
        oldest = max(((today - i.due_date).days for i in late), default=0)
        assert int(deal["Days_Past_Due__c"] or 0) == oldest, deal
        status = "Paid" if due == 0 else "Invoiced" if due == total else "Partially Paid"
        status = "Not Invoiced" if total <= 0 else status
        status = "Overdue" if late else status
        assert deal["Payment_Status__c"] == status, (deal, status)
        currency = firm.deals[deal_id]["currency"]
        by_account[deal["AccountId"]][currency] += total
        if late:
            overdue_accounts.add(deal["AccountId"])
    for account_id, totals in by_account.items():
        account = final.accounts[account_id]
        own = Decimal(str(account["Invoiced_Amount__c"] or 0)).quantize(CENT)
        assert own == totals.get(account["CurrencyIsoCode"], Decimal(0)), account_id
        listed = account["Billing_By_Currency__c"] or ""
        for currency, total in totals.items():  # nothing summed across currencies
            assert f"{currency}: invoiced {total}" in listed, (account_id, listed)
        if account_id in overdue_accounts:
            assert account["Payment_Status__c"] == "Overdue", account
    # Harvest's billed flags against the ERP's invoices: reconciliation (final_check)
    # exceptions: exactly the blocked deals, the time refused after finance closed projects
    # and the invoices without an exchange rate (naming the currency)
    refused = {
        f"harvest:time_entry:{e['id']}"
        for e in final.entries
        if e["is_closed"]
        and e["project"]["code"].removeprefix("SF-") in firm.finance_closes
        and not billable(firm, e)
    }
    check_billing(firm, final)
    blocked = {f"salesforce:Opportunity:{d}" for d in firm.blocked}
    blocked |= held_milestones(firm)
    assert refused, "the closed projects got no late time"
    opened = {e.entity: e.message for e in exceptions}
    rateless = {
        entity
        for entity, message in opened.items()
        if ":invoice:SF-" in entity and "no exchange rate for" in message
    }
    assert {e.split(":invoice:SF-")[1].split("/")[0] for e in rateless} == waiting, opened
    assert set(opened) == refused | blocked | rateless, (
        {k: v for k, v in opened.items() if k not in refused | blocked | rateless},
        (refused | blocked) - set(opened),
    )
