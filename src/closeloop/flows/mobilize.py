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

This module checks the deal, routes it and handles what happens to it after (blocked,
reopened, lost, amended); matching the customer and provisioning the projects are
:mod:`.provision`'s, change orders :mod:`.amend`'s, and the commands and signals the instance
sends are built by :mod:`.mobilize_commands`.
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
from closeloop.domain.operations import CloseProject, UpsertProject
from closeloop.domain.records import BusinessIssue, CanonicalRecord, FlowState, FlowStep, Signal
from closeloop.domain.routing import RoleRouting, Roles
from closeloop.domain.taxids import country_code
from closeloop.domain.taxrules import DEFAULT_RULES, TaxRule
from closeloop.flows.amend import NOT_APPLIED, amend
from closeloop.flows.deal_terms import commercial_problems, deal_data
from closeloop.flows.mobilize_commands import (
    command,
    engagement_signals,
    status_command,
    write_back,
)
from closeloop.flows.provision import BLOCKED, cross_referenced, lookup, matched, provisioned

__all__ = ["BLOCKED", "UNROUTED", "MobilizeFlow", "commercial_problems"]

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
                "blocked",
                data,
                issues=(issue,),
                commands=(status_command(data, "Blocked", message),),
            )
        project_key = engagement_code(self.roles.prefix(record.source[0]), deal_id)
        data = deal_data(
            opportunity, deal_id, record.version, project_key, self.entities, self.tax_rules
        )
        data.update(business_key=self.business_key(record), deal_entity=entity, systems=systems)
        resolves = (entity,) if current == "blocked" else ()
        return FlowStep(
            "matching", data, signals=(lookup(data, self.name, watch=False),), resolves=resolves
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
            commands.append(write_back(data, "Mobilized"))
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
        signals = engagement_signals(amendment.data, status)
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
        return command(data, role, operation, key, f"project:{data['project_key']}")

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
                "after time was billed: its projects stay open; close them by hand, and credit "
                f"what should not be billed: closeloop credit {state.data['project_key']}/<period> "
                "--reason ..."
            )
            issue = BusinessIssue(ExceptionClass.CONFLICT, Impact.REVENUE, entity, message)
            data = {**state.data, "lost_after_billing": opportunity.stage.value}
            return FlowStep(state.state, data, issues=(issue,))
        reason = f"the deal went back to {opportunity.stage.value} before any time was billed"
        data = {**state.data, "closed_because": reason}
        key = data["project_key"]
        commands = [
            command(data, role, CloseProject(key=key), key, f"project:{key}")
            for role in ("psa", "erp")
        ]
        commands.append(status_command(data, "Closed", reason))
        return FlowStep(
            "closed", data, commands=tuple(commands), signals=engagement_signals(data, "closed")
        )

    def on_signal(self, state: FlowState | None, signal: Signal, now: datetime) -> FlowStep | None:
        """``xref``: what the cross-reference knows of the account in the ERP; ``billed``:
        time of the engagement is in the ERP (no more automatic closing)."""
        if state is None:
            return None
        if signal.name == "xref":
            return cross_referenced(state, signal.data.get("external_id"), self.match_threshold)
        if signal.name != "billed":
            return None
        data = {**state.data, "billed": True}
        info = signal.data
        if info.get("through"):
            data["invoiced_through"] = max(data.get("invoiced_through") or "", info["through"])
        data["invoiced_roles"] = sorted(
            set(data.get("invoiced_roles") or []) | set(info.get("invoiced_roles") or [])
        )
        if "invoiced_milestones" in info:  # the whole set: a credited milestone leaves it
            data["invoiced_milestones"] = sorted(info["invoiced_milestones"])
        if data == state.data:
            return None
        return FlowStep(state.state, data)

    def on_timer(self, state: FlowState, now: datetime) -> FlowStep | None:
        """No timers."""
        return None

    # --- results from the target systems ---------------------------------------------------
    def on_result(
        self, state: FlowState, operation: str, entity: str, outcome: Applied
    ) -> FlowStep | None:
        """Advance on each applied command: the match decides the customer, the set-up
        results are collected, the write-back ends the mobilization (:mod:`.provision`); a
        version of the deal that came meanwhile is applied then."""
        data = dict(state.data)
        if operation == "match_customer" and state.state == "matching":
            return matched(data, outcome.result, self.name, self.roles)
        if state.state != "provisioning":
            return None
        step = provisioned(data, operation, entity, outcome.result)
        pending = step.data.get("next_version")
        if step.state == "provisioning" or not pending:
            return step
        amended = self._amended(
            step.state, step.data, pending["version"], Opportunity.model_validate(pending["data"])
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


def _routable(data: dict[str, Any]) -> dict[str, Any]:
    """The deal as routing rules see it: the account's country as its ISO 3166 code when it
    names one (rules say ``FR``, whether the CRM holds ``France`` or ``FR``)."""
    customer = dict(data.get("customer") or {})
    with contextlib.suppress(ValueError):
        customer["country"] = country_code(str(customer.get("country") or ""))
    return {**data, "customer": customer}
