"""Mobilize: a closed-won opportunity becomes a customer in the ERP and a project in the PSA
and in the ERP, and the CRM learns where it stands.

One instance per opportunity (business key ``engagement:<canonical id>``). States:

- ``blocked``: the deal's commercial data is missing or invalid (legal name, billing country,
  a tax id valid for that country, currency, billing method, rate card, start date), its
  legal entity is missing, unknown or does not invoice in the deal's currency, the tax rules
  cannot decide its VAT treatment (:func:`.deal_terms.commercial_problems`), or the ERP holds
  several customers it could be; a business exception "closed-won deal blocked from
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
  with the same tasks, invoiced on timesheets, in the deal's legal entity with the customer's
  tax treatment, which the ERP applies with its own tax rules).
- ``mobilized``, or ``provisional`` when finance approval is required and not yet given
  (billable time against it is held until approval arrives); the CRM gets the ERP customer id,
  the project ids and the status.
- ``closed``: compensation. A deal reopened or lost before any time was billed closes the
  projects in both systems (never deletes them) and records why. One lost after time was
  billed keeps its projects and opens a business exception for a person to decide.

Entering ``provisional``, ``mobilized`` or ``closed`` signals the engagement's invoicing
(:mod:`.invoice`, which holds or releases its time) and its status-back instance
(:mod:`.status_back`); invoicing signals ``billed`` back when the first line is recorded.

Pure decisions over canonical data: the flow speaks to the roles ``crm``, ``psa`` and ``erp``
through typed operations (:mod:`closeloop.domain.operations`), each command to the system the
engagement was routed to (:mod:`closeloop.domain.routing`: the first time a closed-won deal
is checked, the PSA and ERP are picked by the configured rules and kept in the state; a deal
no rule routes is blocked with a business exception saying so). Keys name the deal, not only
the account: two deals of one account each create (idempotently, by code) the customer they
need, in their own order. The project key and a new customer's code are built by
:func:`closeloop.domain.keys.engagement_code` from the CRM's key prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from closeloop.domain.canonical.sales import FinanceApproval, Opportunity
from closeloop.domain.commands import Applied, Command, ExceptionClass, Impact
from closeloop.domain.entities import LegalEntity
from closeloop.domain.keys import engagement_code
from closeloop.domain.operations import (
    Address,
    CloseProject,
    MatchCustomer,
    Operation,
    UpdateEngagement,
    UpsertCustomer,
    UpsertProject,
    role_command,
)
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.domain.routing import RoleRouting, Roles
from closeloop.domain.taxids import country_code
from closeloop.domain.taxrules import DEFAULT_RULES, TaxRule
from closeloop.flows.amend import NOT_APPLIED, amend, project_operation, rate_schedule
from closeloop.flows.deal_terms import commercial_problems, deal_data
from closeloop.ports.flows import xref_link, xref_lookup

__all__ = ["BLOCKED", "UNROUTED", "MobilizeFlow", "commercial_problems"]

BLOCKED = "closed-won deal blocked from mobilization"
UNROUTED = "no system is configured to serve the deal as"
UNDER_WAY = ("matching", "provisioning", "mobilized", "provisional")


@dataclass(frozen=True)
class MobilizeFlow:
    """The flow for the systems of ``roles``. ``match_threshold``: the similarity score
    (0-100) a name-and-address match needs. ``entities``: the firm's legal entities by code
    (none: one company, no tax decisions); ``tax_rules``: the VAT treatment table;
    ``system_entities``: the entity each ERP system books for (a deal routed to another
    entity's system is blocked: the rules are wrong)."""

    roles: Roles
    match_threshold: float = 85.0
    name: str = "mobilize"
    entities: Mapping[str, LegalEntity] = field(default_factory=dict, hash=False)
    tax_rules: tuple[TaxRule, ...] = DEFAULT_RULES
    system_entities: Mapping[str, str] = field(default_factory=dict, hash=False)

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
            return self._not_won(state, opportunity)
        if current in UNDER_WAY:
            assert state is not None
            return self._under_way(state, record, opportunity)
        if current == "closed" and state is not None:
            return self._closed_changed(state, record)
        entity = ":".join(record.source)
        systems = self._systems(state, record)
        problems = commercial_problems(opportunity, self.entities, self.tax_rules) + [
            f"{UNROUTED} {role}: {self._routing(role).explain()}"
            for role, system in systems.items()
            if system is None
        ]
        books = self.system_entities.get(systems.get("erp") or "")
        selling = (opportunity.legal_entity or "").strip()
        if self.entities and books and selling in self.entities and books != selling:
            problems.append(
                f"the deal of {selling} was routed to {systems['erp']}, which books for "
                f"{books}: route legal_entity {selling} to its own system under roles.erp"
            )
        if problems:
            message = f"{BLOCKED}: " + "; ".join(problems)
            data = {
                "deal_id": deal_id,
                "deal_entity": entity,
                "version": record.version,
                "problems": problems,
                "business_key": self.business_key(record),
                "systems": systems,
            }
            error_class = (
                ExceptionClass.MAPPING
                if all(p.startswith(UNROUTED) for p in problems)
                else ExceptionClass.VALIDATION
            )
            issue = BusinessIssue(error_class, Impact.REVENUE, entity, message)
            return FlowStep(
                "blocked", data, issues=(issue,), commands=(self._status(data, "Blocked", message),)
            )
        project_key = engagement_code(self.roles.prefix(record.source[0]), deal_id)
        data = deal_data(
            opportunity, deal_id, record.version, project_key, self.entities, self.tax_rules
        )
        data.update(business_key=self.business_key(record), deal_entity=entity, systems=systems)
        resolves = (entity,) if current == "blocked" else ()
        return FlowStep(
            "matching", data, signals=(self._lookup(data, watch=False),), resolves=resolves
        )

    def _under_way(
        self, state: FlowState, record: CanonicalRecord, opportunity: Opportunity
    ) -> FlowStep | None:
        """A new version of a deal being mobilized (kept until it is mobilized) or mobilized:
        finance approval arriving, and change orders (:mod:`.amend`)."""
        data = dict(state.data)
        if record.version == data.get("version"):
            return None
        if state.state in ("matching", "provisioning"):
            data["next_version"] = {"version": record.version, "data": record.data}
            return FlowStep(state.state, data)
        return self._amended(state.state, data, record.version, opportunity)

    def _amended(
        self, current: str, data: dict[str, Any], version: str, opportunity: Opportunity
    ) -> FlowStep:
        """Apply the deal's new ``version`` to the mobilized (or provisional) engagement."""
        data.pop("next_version", None)
        commands: list[Command] = []
        status = current
        if current == "provisional" and opportunity.finance_approval is FinanceApproval.APPROVED:
            data["finance_approved"] = True
            status = "mobilized"
            commands.append(self._write_back(data, "Mobilized"))
        problems = commercial_problems(opportunity, self.entities, self.tax_rules)
        new_data = None
        if not problems:
            new_data = deal_data(
                opportunity,
                data["deal_id"],
                version,
                data["project_key"],
                self.entities,
                self.tax_rules,
            )
        amendment = amend(data, opportunity, version, new_data, problems, self._change_command)
        commands += amendment.commands
        signals = self._signals(amendment.data, status)
        if status == current and not amendment.changed:
            signals = ()
        return FlowStep(
            status,
            amendment.data,
            commands=tuple(commands),
            issues=amendment.issues,
            signals=signals,
            audit=amendment.audit,
        )

    def _change_command(
        self, data: dict[str, Any], role: str, operation: UpsertProject, key: str
    ) -> Command:
        return self._command(data, role, operation, key, f"project:{data['project_key']}")

    def _closed_changed(self, state: FlowState, record: CanonicalRecord) -> FlowStep | None:
        """A closed-won version of a deal whose engagement was closed: nothing is applied to
        closed projects; a person decides (reopen by hand, or sell it as a new deal)."""
        data = dict(state.data)
        if record.version == data.get("version") or data.get("reopen_reported") == record.version:
            return None
        data["reopen_reported"] = record.version
        message = (
            f"{NOT_APPLIED} to engagement {data['project_key']}: the deal is won again (or "
            f"changed) after its engagement was closed ({data.get('closed_because')}); its "
            "projects stay closed: reopen them by hand or sell the work as a new deal"
        )
        issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, data["deal_entity"], message)
        return FlowStep("closed", data, issues=(issue,))

    def _routing(self, role: str) -> RoleRouting:
        routing: RoleRouting = getattr(self.roles, role)
        return routing

    def _systems(self, state: FlowState | None, record: CanonicalRecord) -> dict[str, str | None]:
        """The deal's systems: kept once the ERP was asked about the deal's customer (a deal
        blocked on an ambiguous match waits in that ERP), else routed now by the rules (a
        deal blocked for its data is routed again when fixed: its country may have been the
        mistake)."""
        asked = state is not None and state.data.get("match_asked")
        kept = (state.data.get("systems") or {}) if asked and state is not None else {}
        systems: dict[str, str | None] = {"crm": record.source[0]}
        routable = _routable(record.data)
        for role in ("psa", "erp"):
            systems[role] = kept.get(role) or self._routing(role).route(routable)
        return systems

    def _not_won(self, state: FlowState | None, opportunity: Opportunity) -> FlowStep | None:
        if state is None:
            return None
        entity = state.data["deal_entity"]
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
            self._command(data, role, CloseProject(key=key), key, f"project:{key}")
            for role in ("psa", "erp")
        ]
        commands.append(self._status(data, "Closed", reason))
        return FlowStep(
            "closed", data, commands=tuple(commands), signals=self._signals(data, "closed")
        )

    def _command(
        self, data: dict[str, Any], role: str, operation: Operation, key: str, entity: str
    ) -> Command:
        """``operation`` for the system the engagement was routed to for ``role``;
        ``entity`` is named within that system."""
        system = data["systems"][role]
        return role_command(
            system,
            operation,
            business_key=data["business_key"],
            key=key,
            entity=f"{system}:{entity}",
            impact=Impact.REVENUE,
        )

    def _signals(self, data: dict[str, Any], status: str) -> tuple[Signal, ...]:
        """Tell the engagement's invoicing and status-back instances where it stands."""
        key = data["project_key"]
        tax = data.get("tax") or {}
        invoicing = {
            "status": status,
            "engagement": data["business_key"],
            "closed_because": data.get("closed_because"),
            "erp": data["systems"]["erp"],
            "currency": data["currency"],
            "legal_entity": data.get("legal_entity"),
            "payment_terms_days": data.get("payment_terms_days"),
            "mention": tax.get("mention") or "",
            "customer_tax_id": (
                data["customer"]["tax_id"] if tax.get("treatment") == "reverse_charge" else None
            ),
            "billing_method": data.get("billing_method") or "time_and_materials",
            "milestones": data.get("milestones") or [],
            "retainer": data.get("retainer"),
            "expense_markup_percent": data.get("expense_markup_percent"),
            "rates": rate_schedule(data),
            "removed_roles": data.get("removed_roles") or {},
            "start_date": data["start_date"],
            "end_date": data.get("end_date"),
        }
        engagement = {
            "status": status,
            "deal_id": data["deal_id"],
            "account_id": data["customer"]["crm_id"],
            "client": data["customer"]["legal_name"],
            "start_date": data["start_date"],
            "currency": data["currency"],
            "account_currency": data["customer"].get("currency") or data["currency"],
            "legal_entity": data.get("legal_entity"),
            **data["systems"],
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
        if signal.name != "billed":
            return None
        data = {**state.data, "billed": True}
        info = signal.data
        if info.get("through"):
            data["invoiced_through"] = max(data.get("invoiced_through") or "", info["through"])
        for name in ("invoiced_roles", "invoiced_milestones"):
            data[name] = sorted(set(data.get(name) or []) | set(info.get(name) or []))
        if data == state.data:
            return None
        return FlowStep(state.state, data)

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
            entity = data["deal_entity"]
            data.update(customer_match_kind="linked", customer_match=f"linked to {code}")
            step = self._provision(data, code)
            return FlowStep(step.state, step.data, commands=step.commands, resolves=(entity,))
        return None

    def _account(self, data: dict[str, Any]) -> tuple[str, str, str]:
        """The deal's account as the cross-reference names it."""
        return ("account", data["systems"]["crm"], data["customer"]["crm_id"])

    def _lookup(self, data: dict[str, Any], *, watch: bool) -> Signal:
        erp = data["systems"]["erp"]
        return xref_lookup(self._account(data), erp, (self.name, data["business_key"]), watch=watch)

    def _link(self, data: dict[str, Any], code: str) -> Signal:
        return xref_link(self._account(data), data["systems"]["erp"], code)

    def _match_command(self, data: dict[str, Any]) -> Command:
        customer = data["customer"]
        match = MatchCustomer(
            name=customer["legal_name"],
            country=customer["country"],
            tax_ids=tuple(t for t in (customer["tax_id"],) if t),
            street=customer.get("street") or "",
            city=customer.get("city") or "",
            postal_code=customer.get("postal_code") or "",
            threshold=self.match_threshold,
        )
        key = f"{data['deal_id']}:{data['version']}"
        return self._command(data, "erp", match, key, f"customer:{customer['crm_id']}")

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
        systems = data["systems"]
        if operation == "upsert_customer":  # created: the account is this customer from now
            data["erp_customer_id"] = outcome.result.get("party")
            signals = (self._link(data, data["erp_customer_code"]),)
        elif operation == "upsert_project" and entity.startswith(f"{systems['psa']}:"):
            data["psa_project_id"] = outcome.result.get("project_id")
        elif operation == "upsert_project" and entity.startswith(f"{systems['erp']}:"):
            data["erp_project_id"] = outcome.result.get("project_id")
        waiting = [k for k in ("psa_project_id", "erp_project_id") if data.get(k) is None]
        if waiting:
            return FlowStep("provisioning", data, signals=signals)
        provisional = data["finance_approval"] == FinanceApproval.PENDING.value
        status = "Provisional" if provisional else "Mobilized"
        step = FlowStep(
            status.lower(),
            data,
            commands=(self._write_back(data, status),),
            signals=signals + self._signals(data, status.lower()),
        )
        pending = data.get("next_version")
        if not pending:
            return step
        amended = self._amended(
            step.state, data, pending["version"], Opportunity.model_validate(pending["data"])
        )
        latest = {s.business_key: s for s in (*step.signals, *amended.signals)}
        return FlowStep(
            amended.state,
            amended.data,
            commands=step.commands + amended.commands,
            issues=amended.issues,
            signals=tuple(s for s in step.signals if s.name != "engagement")
            + tuple(s for s in latest.values() if s.name == "engagement"),
            audit=amended.audit,
        )

    def _matched(self, data: dict[str, Any], result: dict[str, Any]) -> FlowStep:
        entity = data["deal_entity"]
        if result.get("kind") == "ambiguous":
            systems = data["systems"]
            message = (
                f"{BLOCKED}: {result.get('explain')}; merge the ERP customers, or pick one with "
                f"closeloop xref link account {systems['crm']}:{data['customer']['crm_id']} "
                f"{systems['erp']}:<customer code>"
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
        prefix = self.roles.prefix(data["systems"]["crm"])
        code = engagement_code(prefix, customer["crm_id"])
        data["customer_match"] = "created"
        upsert = UpsertCustomer(
            code=code,
            name=customer["legal_name"],
            country=customer["country"],
            tax_ids=(((customer["tax_scheme"], customer["tax_id"]),) if customer["tax_id"] else ()),
            address=Address(
                line1=customer.get("street") or "",
                city=customer.get("city") or "",
                postal_code=customer.get("postal_code") or "",
            ),
        )
        create = self._command(data, "erp", upsert, f"{code}:{data['deal_id']}", f"customer:{code}")
        step = self._provision(data, code)
        return FlowStep(step.state, step.data, commands=(create, *step.commands))

    def _provision(self, data: dict[str, Any], customer_code: str) -> FlowStep:
        """Set up the projects in both systems for the ERP customer ``customer_code``."""
        data = {**data, "erp_customer_code": customer_code}
        data["base_rates"] = {r["role"]: r["rate"] for r in data["roles"]}
        key = data["project_key"]
        commands = tuple(
            self._command(data, role, project_operation(data, role), key, f"project:{key}")
            for role in ("psa", "erp")
        )
        return FlowStep("provisioning", data, commands=commands)

    def _write_back(self, data: dict[str, Any], status: str) -> Command:
        update = UpdateEngagement(
            deal_id=data["deal_id"],
            status=status,
            message=data.get("customer_match") or "",
            customer_code=data.get("erp_customer_code"),
            psa_project_id=str(data.get("psa_project_id") or ""),
            project_key=data.get("project_key"),
        )
        return self._crm_update(data, update)

    def _status(self, data: dict[str, Any], status: str, message: str) -> Command:
        update = UpdateEngagement(deal_id=data["deal_id"], status=status, message=message)
        return self._crm_update(data, update)

    def _crm_update(self, data: dict[str, Any], update: UpdateEngagement) -> Command:
        key = f"opportunity:{update.deal_id}:mobilization:{update.status}:{data['version']}"
        crm = data["systems"]["crm"]
        return role_command(
            crm,
            update,
            business_key=data["business_key"],
            key=key,
            entity=data["deal_entity"],
            impact=Impact.REVENUE,
        )


def _routable(data: dict[str, Any]) -> dict[str, Any]:
    """The deal as routing rules see it: the account's country as its ISO 3166 code when it
    names one (rules say ``FR``, whether the CRM holds ``France`` or ``FR``)."""
    customer = dict(data.get("customer") or {})
    with contextlib.suppress(ValueError):
        customer["country"] = country_code(str(customer.get("country") or ""))
    return {**data, "customer": customer}
