"""The demo firm's deals sold other than by time and materials, and what people do to them
during the quarter (for the demo and the end-to-end tests).

:func:`sell_every_way` turns some of the firm's deals into:

- two **fixed-fee** deals, each with a milestone plan in Salesforce (``Milestone__c``): one
  by shares of the fee (30 %, 40 %, 30 %), one by amounts (half and half);
- one **retainer**: a monthly fee for included hours, unused hours rolling over, hours
  beyond them billed at the rate card;
- two **time-and-materials deals with expenses** (billed with a 10 % markup; each also logs a
  non-billable expense, cost only).

During the quarter (:func:`amend_deals`, :func:`accept_milestones`, :func:`log_expenses`,
:func:`credit_an_invoice`): three signed deals are amended (a new role, a rate raised
mid-quarter, a milestone moved), clients accept milestones, one milestone is disputed (held),
and finance credits one posted invoice in full, to be billed again.

``Firm.billing`` keeps what each case must come to (the checks of the end-to-end tests and
the demo's summary read it).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from closeloop.bootstrap import Hub
from closeloop.connectors.salesforce.client import SalesforceClient
from closeloop.devtools.demo.firm import ROLES, Firm, fee_of, sf_id

MARKUP_PERCENT = Decimal(10)
SHARES = (Decimal(30), Decimal(40), Decimal(30))


def candidates(firm: Firm) -> list[str]:
    """Deals free to sell another way: valid, not waiting for approval or an exchange rate,
    not closed part way by finance, in a currency of two decimals, not the acquired unit's
    (it sells by time and materials)."""
    return [
        d
        for d, info in firm.deals.items()
        if d not in firm.blocked
        and d != firm.needs_approval
        and d not in firm.no_rate
        and d not in firm.finance_closes
        and d not in firm.acquired
        and info["currency"] in ("EUR", "GBP", "USD", "CHF")
    ]


def sell_every_way(firm: Firm, items: list[dict[str, Any]]) -> None:
    """Make some of the firm's deals fixed fee, retainer and time-and-materials with
    expenses (``items``: the opportunities' line items); records ``firm.billing``. A firm
    with fewer than six free deals sells by time and materials only."""
    free = candidates(firm)
    if len(free) < 6:
        return
    opportunities = {o["Id"]: o for o in firm.salesforce["Opportunity"]}
    milestones: list[dict[str, Any]] = []
    fixed_a, fixed_b, retainer, expenses_x, expenses_y, new_role = free[:6]
    for number, deal_id in enumerate((fixed_a, fixed_b)):
        fee = fee_of(deal_id, items)
        plan = _plan(deal_id, fee, by_shares=number == 0)
        for milestone in plan:  # a month apart from the deal's start
            start = firm.deals[deal_id]["start"]
            milestone["planned"] = start + timedelta(days=30 * (milestone["index"] + 1))
        opportunities[deal_id]["Billing_Method__c"] = "Fixed Fee"
        milestones += [
            {
                "Id": m["id"],
                "Name": m["name"],
                "Opportunity__c": deal_id,
                "Planned_Date__c": m["planned"].isoformat(),
                "Status__c": "Planned",
                "CurrencyIsoCode": firm.deals[deal_id]["currency"],
                **(
                    {"Share__c": str(m["share"])}
                    if "share" in m
                    else {"Amount__c": str(m["amount"])}
                ),
            }
            for m in plan
        ]
        firm.billing[deal_id] = {"method": "fixed_fee", "fee": fee, "milestones": plan}
    info = firm.deals[retainer]
    rate = sum(info["rates"].values(), Decimal(0)) / len(info["rates"])
    included = Decimal(60)
    amount = (rate * included).quantize(Decimal(1))
    opportunities[retainer].update(
        Billing_Method__c="Retainer",
        Retainer_Amount__c=str(amount),
        Retainer_Included_Hours__c=str(included),
        Unused_Hours__c="Roll Over",
    )
    firm.billing[retainer] = {
        "method": "retainer",
        "amount": amount,
        "included_hours": included,
        "roll_over": True,
    }
    for deal_id in (expenses_x, expenses_y):
        opportunities[deal_id]["Expense_Markup__c"] = str(MARKUP_PERCENT)
        firm.billing[deal_id] = {"method": "time_and_materials", "markup": MARKUP_PERCENT}
    firm.billing.setdefault(new_role, {"method": "time_and_materials"})
    firm.amended = {"new_role": new_role, "rate_change": expenses_x, "milestone_moved": fixed_b}
    firm.salesforce.setdefault("Milestone__c", []).extend(milestones)


def _plan(deal_id: str, fee: Decimal, *, by_shares: bool) -> list[dict[str, Any]]:
    """The milestones of a fixed fee: three by share of the fee, or two by amount."""
    number = int(deal_id[9:15]) % 100_000  # unique within a firm (its deals' sequence)
    names = ("Discovery", "Delivery", "Handover") if by_shares else ("Design", "Go-live")
    plan = []
    for index, name in enumerate(names):
        milestone: dict[str, Any] = {
            "id": sf_id("a0M", number * 10 + index),
            "name": name,
            "index": index,
        }
        if by_shares:
            milestone["share"] = SHARES[index]
            milestone["amount"] = (fee * SHARES[index] / 100).quantize(Decimal("0.01"))
        else:
            milestone["amount"] = (fee / 2).quantize(Decimal("0.01"))
        plan.append(milestone)
    if not by_shares:  # the halves of an odd cent: the last takes what the first leaves
        plan[1]["amount"] = fee - plan[0]["amount"]
    return plan


def amend_deals(sf: SalesforceClient, firm: Firm) -> None:
    """Three signed deals change in the CRM: a new role on one, a rate raised mid-quarter on
    another (effective the first of the quarter's last month), a milestone moved a fortnight
    later on a fixed-fee deal."""
    new_role = firm.amended["new_role"]
    info = firm.deals[new_role]
    role = next(r for r in sorted(ROLES) if r not in info["roles"])
    rate = next(iter(info["rates"].values()))
    sf.request(
        "POST",
        "sobjects/OpportunityLineItem",
        body={
            "OpportunityId": new_role,
            "Product2Id": sf_id("01t", 1),
            "Quantity": 40,
            "UnitPrice": str(rate),
            "Role__c": role,
        },
    )
    info["roles"] = [*info["roles"], role]
    info["rates"] = {**info["rates"], role: rate}
    raised = firm.amended["rate_change"]
    info = firm.deals[raised]
    role = info["roles"][0]
    effective = firm.end.replace(day=1)
    new_rate = (info["rates"][role] * Decimal("1.1")).quantize(Decimal(1))
    lines = sf.query(
        f"SELECT Id FROM OpportunityLineItem WHERE OpportunityId = '{raised}' "
        f"AND Role__c = '{role}'"
    )
    for page in lines:
        for line in page["records"]:
            sf.request(
                "PATCH",
                f"sobjects/OpportunityLineItem/{line['Id']}",
                body={"UnitPrice": str(new_rate)},
            )
    sf.request(
        "PATCH",
        f"sobjects/Opportunity/{raised}",
        body={"Amendment_Effective_Date__c": effective.isoformat()},
    )
    info["rate_changes"] = {role: (effective, new_rate)}
    moved = firm.billing[firm.amended["milestone_moved"]]["milestones"][1]
    moved["planned"] += timedelta(days=14)
    sf.request(
        "PATCH",
        f"sobjects/Milestone__c/{moved['id']}",
        body={"Planned_Date__c": moved["planned"].isoformat()},
    )


def accept_milestones(sf: SalesforceClient, firm: Firm) -> None:
    """Clients accept the first milestone of each fixed-fee deal and the last of the
    share-based one; its second is disputed (held until accepted)."""
    for number, case in enumerate(c for c in firm.billing.values() if c["method"] == "fixed_fee"):
        plan = case["milestones"]
        statuses = {0: "Accepted"}
        if number == 0:
            statuses.update({1: "Disputed", 2: "Accepted"})
        for index, status in statuses.items():
            plan[index]["status"] = status
            sf.request(
                "PATCH", f"sobjects/Milestone__c/{plan[index]['id']}", body={"Status__c": status}
            )


CATEGORIES = ("Lodging", "Travel", "Meals")


def expense_categories(firm: Firm) -> list[dict[str, Any]]:
    """Harvest's expense categories (seed shape), numbered from the firm's first consultant."""
    first = int(firm.consultants[0]["id"])
    return [{"id": first + 900 + n, "name": name} for n, name in enumerate(CATEGORIES)]


def expenses(firm: Firm, projects: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Harvest expenses (seed shape) of the deals with expenses: a billable hotel night and
    train ticket, and a non-billable team dinner (cost only)."""
    categories = {c["name"]: c["id"] for c in expense_categories(firm)}
    rows = []
    spent = (
        ("Lodging", "182.40", True, 3),
        ("Travel", "96.50", True, 10),
        ("Meals", "240.00", False, 12),
    )
    for number, (deal_id, case) in enumerate(sorted(firm.billing.items())):
        if "markup" not in case or deal_id not in projects:
            continue
        start = firm.deals[deal_id]["start"]
        person = firm.consultants[number % len(firm.consultants)]["id"]
        for category, amount, billable, days in spent:
            rows.append(
                {
                    "user_id": person,
                    "project_id": projects[deal_id]["id"],
                    "expense_category_id": categories[category],
                    "spent_date": (start + timedelta(days=days)).isoformat(),
                    "total_cost": float(amount),
                    "billable": billable,
                    "notes": f"{category} for {firm.deals[deal_id]['account']}",
                }
            )
        case["expenses"] = [(c, Decimal(a), b) for c, a, b, _ in spent]
        case["person"] = person
    return rows


def credit_an_invoice(hub: Hub, firm: Firm) -> str | None:
    """Finance credits the first posted period invoice of the new-role deal in full (the
    client disputes its hours), its time to be billed again in the PSA; returns the
    invoice's reference (``None`` when the deal has none)."""
    if not firm.amended:
        return None
    key = f"SF-{firm.amended['new_role']}"
    with hub.store.transaction() as tx:
        found = tx.get_flows([("invoice", f"billing:{key}")])
    state = found.get(("invoice", f"billing:{key}"))
    posted: list[str] = sorted(
        str(r)
        for r, i in ((state.data.get("invoices") or {}) if state else {}).items()
        if i and i.get("state") in ("posted", "paid") and "/credit-" not in r
    )
    if not posted:
        return None
    hub.operations.credit(
        posted[0], "client disputes the hours of the period", "finance", rebill=True
    )
    firm.credited.append(posted[0])
    return posted[0]
