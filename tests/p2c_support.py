"""Reading the final state back from Salesforce, Harvest and Tryton after a project-to-cash
run, and checking it against the firm that was seeded (for the end-to-end tests)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from closeloop.connectors.harvest.client import HarvestClient
from closeloop.connectors.salesforce.client import SalesforceClient
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.devtools.demo.firm import ROLES, Firm
from closeloop.ports.store import ExceptionRow

CENT = Decimal("0.01")
TAX_RATE = Decimal("0.19")  # the sandbox ERP's sales tax (TrytonSetup)


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


def read_back(
    sf: SalesforceClient, hv: HarvestClient, ops: TrytonOperations, firm: Firm
) -> FinalState:
    """Everything the checks need, straight from the systems' APIs (of the ERP, only what
    belongs to ``firm``: other tests may share it)."""
    money = (
        "Invoiced_Amount__c, Paid_Amount__c, Outstanding_Amount__c, Last_Invoice_Number__c, "
        "Payment_Status__c"
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
        r["Id"]: r for page in sf.query(f"SELECT Id, {money} FROM Account") for r in page["records"]
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
        i.reference: i
        for i in ops.read_invoices([["reference", "like", "SF-%"]])
        if str(i.reference).startswith(ours)
    }
    parties = ops.rpc.search_read(
        "party.identifier", [["type", "!=", None]], ["code", "party.code"]
    )  # every tax id in the ERP: no test may leave two parties with one
    return FinalState(deals, accounts, projects, rates, entries, lines, invoices, parties)


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


def check(firm: Firm, final: FinalState, exceptions: list[ExceptionRow]) -> None:
    """Assert the end state of a quarter: see the module docstring of the e2e test."""
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
        roles = firm.deals[deal_id]["roles"]
        assert final.rates[str(project["id"])] == {r: float(ROLES[r]) for r in roles}
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
    # invoices: all posted; totals are hours x rates plus tax; every recorded line invoiced
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    roles: dict[str, set[str]] = defaultdict(set)
    for entry_id, recorded in final.lines.items():
        entry = codes[int(entry_id)]
        line = recorded[0]
        reference = ((line.get("invoice_line.") or {}).get("invoice.") or {}).get("reference")
        assert reference, f"time entry {entry_id} recorded but never invoiced"
        amounts[reference] += Decimal(str(entry["hours"])) * ROLES[entry["task"]["name"]]
        roles[reference].add(entry["task"]["name"])
    assert set(amounts) == set(final.invoices)
    for reference, invoice in final.invoices.items():
        assert invoice.state in ("posted", "paid"), invoice
        assert invoice.untaxed_amount == amounts[reference].quantize(CENT), reference
        # Tryton rounds the tax of each invoice line (one per task)
        expected_tax = amounts[reference] * TAX_RATE
        assert abs(invoice.tax_amount - expected_tax) <= CENT * len(roles[reference]), reference
        assert invoice.total_amount == invoice.untaxed_amount + invoice.tax_amount
    # write-back: each deal and account shows its invoices' sums
    by_deal: dict[str, list[Any]] = defaultdict(list)
    for reference, invoice in final.invoices.items():
        by_deal[reference.split("/")[0].removeprefix("SF-")].append(invoice)
    by_account: dict[str, Decimal] = defaultdict(Decimal)
    for deal_id, invoices in by_deal.items():
        deal = final.deals[deal_id]
        total = sum((i.total_amount for i in invoices), Decimal(0))
        due = sum((i.amount_to_pay for i in invoices), Decimal(0))
        assert Decimal(str(deal["Invoiced_Amount__c"])).quantize(CENT) == total, deal
        assert Decimal(str(deal["Outstanding_Amount__c"])).quantize(CENT) == due, deal
        last = max(invoices, key=lambda i: (i.invoice_date, i.number))
        assert deal["Last_Invoice_Number__c"] == last.number
        status = "Paid" if due == 0 else "Invoiced" if due == total else "Partially Paid"
        assert deal["Payment_Status__c"] == status
        by_account[deal["AccountId"]] += total
    for account_id, total in by_account.items():
        invoiced = final.accounts[account_id]["Invoiced_Amount__c"]
        assert Decimal(str(invoiced)).quantize(CENT) == total, account_id
    # Harvest: the invoiced entries are billed there, the others not
    invoiced_entries = {int(e) for e, lines in final.lines.items() if lines}
    for entry in final.entries:
        assert entry["is_billed"] == (entry["id"] in invoiced_entries), entry
    # exceptions: exactly the blocked deals and the time refused after finance closed projects
    refused = {
        f"harvest:time_entry:{e['id']}"
        for e in final.entries
        if e["is_closed"]
        and e["project"]["code"].removeprefix("SF-") in firm.finance_closes
        and not billable(firm, e)
    }
    blocked = {f"salesforce:Opportunity:{d}" for d in firm.blocked}
    assert refused, "the closed projects got no late time"
    opened = {e.entity: e.message for e in exceptions}
    assert set(opened) == refused | blocked, (
        {k: v for k, v in opened.items() if k not in refused | blocked},
        (refused | blocked) - set(opened),
    )
