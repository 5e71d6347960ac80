"""Mobilize: a closed-won opportunity becomes a customer in the ERP and a project in the PSA
and in the ERP, and the CRM learns where it stands.

One instance per opportunity (business key ``engagement:<canonical id>``). States:

- ``blocked``: the deal's commercial data is missing or invalid (legal name, billing country,
  a tax id valid for that country, currency, billing method, rate card, start date) or the
  ERP holds several customers it could be; a business exception "closed-won deal blocked from
  mobilization: ..." (impact revenue) is open and the CRM shows the reason. A new version of
  the deal (or of its account) is checked again and resumes the flow by itself.
- ``matching``: the cross-reference first (:mod:`closeloop.engine.xref`: an account an earlier
  deal or a person already resolved keeps its ERP customer); else the ERP is asked which
  customer the account is (``match_customer``: tax id exact, else name and address
  similarity, see :mod:`closeloop.mdm.matching`). A match, or a customer created, is linked in
  the cross-reference. An ambiguous match blocks the deal until a person merges the ERP
  customers (and the deal changes) or links the account to one (``closeloop xref link``).
- ``provisioning``: the customer is created when there was none, and the project is set up in
  the PSA (client, project, tasks by role at the rate card's rates) and in the ERP (project
  with the same tasks, invoiced on timesheets).
- ``mobilized``, or ``provisional`` when finance approval is required and not yet given
  (billable time against it is held until approval arrives); the CRM gets the ERP customer id,
  the project ids and the status.
- ``closed``: compensation. A deal reopened or lost before any time was billed closes the
  projects in both systems (never deletes them) and records why. One lost after time was
  billed keeps its projects and opens a business exception for a person to decide.

Entering ``provisional``, ``mobilized`` or ``closed`` signals the engagement's invoicing
(:mod:`.invoice`, which holds or releases its time) and its status-back instance
(:mod:`.status_back`); invoicing signals ``billed`` back when the first line is recorded.

Pure decisions over canonical data: the commands carry the target systems' idempotency keys
in their documented forms (``tryton:<op>:<key>``, ``harvest:<op>:<key>``,
``salesforce:<Object>:<...>``). Keys name the deal, not only the account: two deals of one
account each create (idempotently, by code) the customer they need, in their own order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from closeloop.domain.canonical.sales import FinanceApproval, Opportunity
from closeloop.domain.commands import Applied, Command, ExceptionClass, Impact
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.flows.deal_terms import commercial_problems, deal_data
from closeloop.ports.flows import xref_link, xref_lookup

__all__ = ["BLOCKED", "MobilizeFlow", "commercial_problems"]

BLOCKED = "closed-won deal blocked from mobilization"
UNDER_WAY = ("matching", "provisioning", "mobilized", "provisional")


@dataclass(frozen=True)
class MobilizeFlow:
    """The flow, for the systems named ``crm``, ``psa`` and ``erp`` in the configuration.
    ``match_threshold``: the similarity score (0-100) a name-and-address match needs."""

    crm: str = "salesforce"
    psa: str = "harvest"
    erp: str = "tryton"
    match_threshold: float = 85.0
    name: str = "mobilize"

    def business_key(self, record: CanonicalRecord) -> str | None:
        """One instance per opportunity."""
        if record.canonical_type != "opportunity":
            return None
        return f"engagement:{record.canonical_id}"

    # --- a new version of the deal -----------------------------------------------------------
    def on_record(self, state: FlowState | None, record: CanonicalRecord) -> FlowStep | None:
        """Check a closed-won deal and start mobilizing it; react to a deal reopened or lost,
        or to finance approval arriving."""
        opportunity = Opportunity.model_validate(record.data)
        deal_id = record.source[2]
        current = state.state if state else None
        if not opportunity.won:
            return self._not_won(state, deal_id, opportunity)
        if current == "provisional" and opportunity.finance_approval is FinanceApproval.APPROVED:
            assert state is not None
            data = {**state.data, "finance_approved": True}
            return FlowStep(
                "mobilized",
                data,
                commands=(self._write_back(data, "Mobilized"),),
                signals=self._signals(data, "mobilized"),
            )
        if current in UNDER_WAY:
            return None
        problems = commercial_problems(opportunity)
        entity = self._deal_entity(deal_id)
        if problems:
            message = f"{BLOCKED}: " + "; ".join(problems)
            data = {
                "deal_id": deal_id,
                "version": record.version,
                "problems": problems,
                "business_key": self.business_key(record),
            }
            issue = BusinessIssue(ExceptionClass.VALIDATION, Impact.REVENUE, entity, message)
            return FlowStep(
                "blocked", data, issues=(issue,), commands=(self._status(data, "Blocked", message),)
            )
        data = deal_data(opportunity, deal_id, record.version)
        data["business_key"] = self.business_key(record)
        resolves = (entity,) if current == "blocked" else ()
        return FlowStep(
            "matching", data, signals=(self._lookup(data, watch=False),), resolves=resolves
        )

    def _not_won(
        self, state: FlowState | None, deal_id: str, opportunity: Opportunity
    ) -> FlowStep | None:
        if state is None:
            return None
        entity = self._deal_entity(deal_id)
        if state.state == "blocked":  # no longer closed-won: nothing to mobilize
            return FlowStep("withdrawn", dict(state.data), resolves=(entity,))
        if state.state not in UNDER_WAY:
            return None
        if state.data.get("billed"):
            if state.data.get("lost_after_billing") == opportunity.stage.value:
                return None
            message = (
                f"engagement {state.data['project_key']} went back to {opportunity.stage.value} "
                "after time was billed: its projects stay open; close them and credit what "
                "should not be billed by hand"
            )
            issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
            data = {**state.data, "lost_after_billing": opportunity.stage.value}
            return FlowStep(state.state, data, issues=(issue,))
        reason = f"the deal went back to {opportunity.stage.value} before any time was billed"
        data = {**state.data, "closed_because": reason}
        key = data["project_key"]
        commands = [
            Command(
                self.psa,
                "close_project",
                data["business_key"],
                f"harvest:close_project:{key}",
                {"code": key},
                f"{self.psa}:project:{key}",
                Impact.REVENUE,
            ),
            Command(
                self.erp,
                "close_project",
                data["business_key"],
                f"tryton:close_project:{key}",
                {"key": key},
                f"{self.erp}:project:{key}",
                Impact.REVENUE,
            ),
            self._status(data, "Closed", reason),
        ]
        return FlowStep(
            "closed", data, commands=tuple(commands), signals=self._signals(data, "closed")
        )

    def _signals(self, data: dict[str, Any], status: str) -> tuple[Signal, ...]:
        """Tell the engagement's invoicing and status-back instances where it stands."""
        key = data["project_key"]
        invoicing = {
            "status": status,
            "engagement": data["business_key"],
            "closed_because": data.get("closed_because"),
        }
        engagement = {
            "status": status,
            "deal_id": data["deal_id"],
            "account_id": data["customer"]["crm_id"],
            "client": data["customer"]["legal_name"],
            "start_date": data["start_date"],
            "currency": data["currency"],
        }
        return (
            Signal("invoice", f"billing:{key}", "engagement", invoicing),
            Signal("status_back", f"status:{key}", "engagement", engagement),
        )

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """``xref``: what the cross-reference knows of the account in the ERP; ``billed``:
        time of the engagement is in the ERP (no more automatic closing)."""
        if state is None:
            return None
        if signal.name == "xref":
            return self._cross_referenced(state, signal.data.get("external_id"))
        if signal.name != "billed" or state.data.get("billed"):
            return None
        return FlowStep(state.state, {**state.data, "billed": True})

    def _cross_referenced(self, state: FlowState, code: str | None) -> FlowStep | None:
        """The cross-reference first: a known account is not matched again. An unknown one is
        matched in the ERP; a deal blocked on an ambiguous match resumes once a person links
        the account to one customer (``closeloop xref link``)."""
        data = dict(state.data)
        if state.state == "matching" and not data.get("match_asked"):
            if code:
                data.update(customer_match_kind="xref", customer_match=f"known as {code}")
                return self._provision(data, code)
            data["match_asked"] = True
            return FlowStep("matching", data, commands=(self._match_command(data),))
        if state.state == "blocked" and data.pop("ambiguous", False) and code:
            entity = self._deal_entity(data["deal_id"])
            data.update(customer_match_kind="linked", customer_match=f"linked to {code}")
            step = self._provision(data, code)
            return FlowStep(step.state, step.data, commands=step.commands, resolves=(entity,))
        return None

    def _deal_entity(self, deal_id: str) -> str:
        """The opportunity as exceptions and commands name it."""
        return f"{self.crm}:Opportunity:{deal_id}"

    def _lookup(self, data: dict[str, Any], *, watch: bool) -> Signal:
        account = ("account", self.crm, data["customer"]["crm_id"])
        return xref_lookup(account, self.erp, (self.name, data["business_key"]), watch=watch)

    def _link(self, data: dict[str, Any], code: str) -> Signal:
        return xref_link(("account", self.crm, data["customer"]["crm_id"]), self.erp, code)

    def _match_command(self, data: dict[str, Any]) -> Command:
        customer = data["customer"]
        return Command(
            system=self.erp,
            operation="match_customer",
            business_key=data["business_key"],
            idempotency_key=f"tryton:match_customer:{data['deal_id']}:{data['version']}",
            payload={
                "name": customer["legal_name"],
                "country": customer["country"],
                "tax_ids": [customer["tax_id"]],
                "street": customer.get("street") or "",
                "city": customer.get("city") or "",
                "postal_code": customer.get("postal_code") or "",
                "threshold": self.match_threshold,
            },
            entity=f"{self.erp}:customer:{customer['crm_id']}",
            impact=Impact.REVENUE,
        )

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """No timers."""
        return None

    # --- results from the target systems ---------------------------------------------------
    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Advance on each applied command: the match decides the customer, the set-up
        results are collected, the write-back ends the mobilization."""
        data = dict(state.data)
        if operation == "match_customer" and state.state == "matching":
            return self._matched(data, outcome.result)
        if state.state != "provisioning":
            return None
        signals: tuple[Signal, ...] = ()
        if operation == "upsert_customer":  # created: the account is this customer from now
            data["erp_customer_id"] = outcome.result.get("party")
            signals = (self._link(data, data["erp_customer_code"]),)
        elif operation == "upsert_project" and entity.startswith(f"{self.psa}:"):
            data["psa_project_id"] = outcome.result.get("project_id")
        elif operation == "upsert_project" and entity.startswith(f"{self.erp}:"):
            works = outcome.result.get("works") or {}
            data["erp_project_id"] = works.get(data["project_key"])
        waiting = [k for k in ("psa_project_id", "erp_project_id") if data.get(k) is None]
        if waiting:
            return FlowStep("provisioning", data, signals=signals)
        provisional = data["finance_approval"] == FinanceApproval.PENDING.value
        status = "Provisional" if provisional else "Mobilized"
        return FlowStep(
            status.lower(),
            data,
            commands=(self._write_back(data, status),),
            signals=signals + self._signals(data, status.lower()),
        )

    def _matched(self, data: dict[str, Any], result: dict[str, Any]) -> FlowStep:
        deal_id = data["deal_id"]
        entity = self._deal_entity(deal_id)
        if result.get("kind") == "ambiguous":
            message = (
                f"{BLOCKED}: {result.get('explain')}; merge the ERP customers, or pick one with "
                f"closeloop xref link account {self.crm}:{data['customer']['crm_id']} "
                f"{self.erp}:<customer code>"
            )
            issue = BusinessIssue(ExceptionClass.DUPLICATE, Impact.REVENUE, entity, message)
            data["ambiguous"] = True
            return FlowStep(
                "blocked",
                data,
                issues=(issue,),
                commands=(self._status(data, "Blocked", message),),
                signals=(self._lookup(data, watch=True),),
            )
        data["customer_match_kind"] = result.get("kind") or "none"
        if result.get("kind") in ("tax_id", "similar"):
            data["erp_customer_id"] = result.get("party_id")
            data["customer_match"] = result.get("explain")
            step = self._provision(data, result["party_code"])
            link = self._link(data, result["party_code"])
            return FlowStep(step.state, step.data, commands=step.commands, signals=(link,))
        customer = data["customer"]
        code = f"SF-{customer['crm_id']}"
        data["customer_match"] = "created"
        create = Command(
            self.erp,
            "upsert_customer",
            data["business_key"],
            f"tryton:upsert_customer:{code}:{deal_id}",
            {
                "code": code,
                "name": customer["legal_name"],
                "country": customer["country"],
                "tax_ids": [[customer["tax_scheme"], customer["tax_id"]]],
                "address": {
                    "line1": customer.get("street") or "",
                    "city": customer.get("city") or "",
                    "postal_code": customer.get("postal_code") or "",
                },
            },
            f"{self.erp}:customer:{code}",
            Impact.REVENUE,
        )
        step = self._provision(data, code)
        return FlowStep(step.state, step.data, commands=(create, *step.commands))

    def _provision(self, data: dict[str, Any], customer_code: str) -> FlowStep:
        """Set up the projects in both systems for the ERP customer ``customer_code``."""
        data = {**data, "erp_customer_code": customer_code}
        return FlowStep(
            "provisioning", data, commands=(self._psa_project(data), self._erp_project(data))
        )

    def _psa_project(self, data: dict[str, Any]) -> Command:
        key = data["project_key"]
        payload = {
            "client": data["customer"]["legal_name"],
            "currency": data["currency"],
            "code": key,
            "name": data["name"],
            "is_billable": True,
            "bill_by": "Tasks",
            "budget_by": "project",
            "budget": float(sum(Decimal(r["hours"]) for r in data["roles"])),
            "starts_on": data["start_date"],
            "tasks": [
                {"name": r["role"], "hourly_rate": float(Decimal(r["rate"]))} for r in data["roles"]
            ],
        }
        return Command(
            self.psa,
            "upsert_project",
            data["business_key"],
            f"harvest:upsert_project:{key}",
            payload,
            f"{self.psa}:project:{key}",
            Impact.REVENUE,
        )

    def _erp_project(self, data: dict[str, Any]) -> Command:
        key = data["project_key"]
        tasks = [
            {"key": f"{key}:{r['role']}", "name": r["role"], "list_price": r["rate"]}
            for r in data["roles"]
        ]
        payload = {
            "key": key,
            "name": data["name"],
            "customer_code": data["erp_customer_code"],
            "tasks": tasks,
            "list_price": max(data["roles"], key=lambda r: Decimal(r["rate"]))["rate"],
            "invoice_method": "timesheet",
        }
        return Command(
            self.erp,
            "upsert_project",
            data["business_key"],
            f"tryton:upsert_project:{key}",
            payload,
            f"{self.erp}:project:{key}",
            Impact.REVENUE,
        )

    def _write_back(self, data: dict[str, Any], status: str) -> Command:
        fields = {
            "ERP_Customer_Id__c": data.get("erp_customer_code"),
            "PSA_Project_Id__c": str(data.get("psa_project_id") or ""),
            "ERP_Project_Id__c": data.get("project_key"),
            "Mobilization_Status__c": status,
            "Mobilization_Message__c": data.get("customer_match") or "",
        }
        return self._crm_update(data, status, fields)

    def _status(self, data: dict[str, Any], status: str, message: str) -> Command:
        fields = {"Mobilization_Status__c": status, "Mobilization_Message__c": message[:1000]}
        return self._crm_update(data, status, fields)

    def _crm_update(self, data: dict[str, Any], status: str, fields: dict[str, Any]) -> Command:
        deal_id = data["deal_id"]
        return Command(
            self.crm,
            "update",
            data["business_key"],
            f"salesforce:Opportunity:{deal_id}:mobilization:{status}:{data['version']}",
            {"object": "Opportunity", "id": deal_id, "fields": fields},
            self._deal_entity(deal_id),
            Impact.REVENUE,
        )
