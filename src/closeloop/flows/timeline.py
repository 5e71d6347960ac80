"""Engagements as the operations console and ``/api/v1`` show them: found by client, deal,
project code or invoice, and each one's timeline from closed-won through customer,
projects, time, invoices and payments. Pure functions over the flow states
(:mod:`.engagements`), the deal as last applied, the commands sent for the engagement's
entities, its audit trail and its exceptions; :func:`find_engagements` and
:func:`engagement_detail` read those through :class:`EngagementReads` (the store's read
model, :class:`closeloop.engine.views.ReadModel`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from closeloop.domain.keys import split_engagement_code
from closeloop.domain.records import FlowState
from closeloop.flows.engagements import EngagementStatus, engagements
from closeloop.ports.store import (
    AppliedRecord,
    AuditEntry,
    CommandRow,
    ExceptionQuery,
    ExceptionRow,
    RecordKey,
)

STAGES = ("Closed won", "Customer", "Projects", "Time", "Invoices", "Payments")
"""The timeline's stages, in the order an engagement goes through them."""

_NO_TIME = datetime.min.replace(tzinfo=UTC)  # what the flow state says comes first
_STAGE_OF_OPERATION = {
    "update_engagement": "Closed won",
    "match_customer": "Customer",
    "upsert_customer": "Customer",
    "upsert_project": "Projects",
    "close_project": "Projects",
    "add_timesheet_line": "Time",
    "mark_billed": "Time",
    "unmark_billed": "Time",
    "invoice_project": "Invoices",
    "post_invoice": "Invoices",
    "credit_invoice": "Invoices",
    "update_billing_totals": "Payments",
}
_STAGE_OF_KIND = {
    "customer": "Customer",
    "project": "Projects",
    "time_entry": "Time",
    "expense": "Time",
    "invoice": "Invoices",
}
_TONE_OF_COMMAND = {
    "done": "ok",
    "pending": "waiting",
    "in_flight": "waiting",
    "parked": "failed",
    "resolved": "muted",
    "superseded": "muted",
}


@dataclass
class Engagement:
    """One engagement: its ``status`` (stage, blockers, time, money), the ``client`` and
    ``deal_name`` (from the deal as last applied, else the flow state), the CRM record it
    came from (``deal_entity``: ``system:object:id``), the systems it was routed to by role,
    its invoices (reference -> number, ``""`` while not posted) and its flow ``states``."""

    status: EngagementStatus
    client: str = ""
    deal_name: str = ""
    deal_entity: str = ""
    close_date: str = ""
    systems: dict[str, str] = field(default_factory=dict)
    invoices: dict[str, str] = field(default_factory=dict)
    states: list[FlowState] = field(default_factory=list)

    @property
    def deal_id(self) -> str:
        """The CRM's id of the deal."""
        return self.status.deal_id


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One line of a timeline: its ``stage`` (one of :data:`STAGES`), when (aware; ``None``
    for what the flow state says without a time), a ``title`` and ``detail`` in words, the
    ``system`` concerned (``""``: the hub) and a ``tone``: ``ok``, ``waiting``,
    ``blocked``, ``failed`` or ``muted`` (skipped or replaced)."""

    stage: str
    at: datetime | None
    title: str
    detail: str = ""
    system: str = ""
    tone: str = "ok"


class EngagementReads(Protocol):
    """What the engagement views read: every flow state, what the hub last applied of given
    records, the commands and the audit trail about given entities, and exceptions."""

    def flows(self) -> list[FlowState]:
        """Every flow instance."""
        ...

    def applied(self, keys: Sequence[RecordKey]) -> Mapping[RecordKey, AppliedRecord]:
        """What the hub last applied of each of ``keys``."""
        ...

    def commands_for(self, entities: Sequence[str]) -> list[CommandRow]:
        """The outbox commands about any of ``entities``, oldest first."""
        ...

    def audit_trail(self, entity: str, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries about ``entity``."""
        ...

    def find_exceptions(self, query: ExceptionQuery) -> list[ExceptionRow]:
        """The exceptions ``query`` finds, newest first."""
        ...


AUDIT_ENTITIES = 50
"""The most related entities whose audit trail a timeline reads (each at most 50 lines)."""


@dataclass
class EngagementDetail:
    """One engagement as its page shows it: the ``engagement``, its timeline ``events``
    (:func:`timeline`), the ``exceptions`` naming its deal or project (open or not, by id;
    at most 100 per needle) and the ``commands`` sent or waiting for its entities (oldest
    first)."""

    engagement: Engagement
    events: list[TimelineEvent]
    exceptions: list[ExceptionRow]
    commands: list[CommandRow]

    @property
    def open_exceptions(self) -> list[ExceptionRow]:
        """The exceptions still open."""
        return [r for r in self.exceptions if r.status == "open"]

    @property
    def stages(self) -> list[tuple[str, list[TimelineEvent]]]:
        """Each of :data:`STAGES` with its events, in order (a stage may have none)."""
        return [(stage, [ev for ev in self.events if ev.stage == stage]) for stage in STAGES]

    @property
    def commands_by_system(self) -> dict[str, dict[str, int]]:
        """How many commands went (or wait to go) to each system, by status."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.commands:
            by_status = counts.setdefault(row.command.system, {})
            by_status[row.status.value] = by_status.get(row.status.value, 0) + 1
        return {system: dict(sorted(c.items())) for system, c in sorted(counts.items())}


def find_engagements(reads: EngagementReads, text: str = "") -> list[Engagement]:
    """The engagements whose client, deal, project code or invoice holds ``text``
    (:func:`search`; blank: all), by client then deal id."""
    states = reads.flows()
    deals = {k: r.data for k, r in reads.applied(deal_keys(states)).items()}
    return search(index(states, deals), text)


def engagement_detail(reads: EngagementReads, deal_id: str) -> EngagementDetail | None:
    """The engagement of the CRM deal ``deal_id`` with its timeline, exceptions and
    commands; ``None`` when no flow knows that deal."""
    engagement = next((e for e in find_engagements(reads) if e.deal_id == deal_id), None)
    if engagement is None:
        return None
    entities = related_entities(engagement)
    found: dict[int, ExceptionRow] = {}
    for needle in {deal_id, engagement.status.project_key} - {""}:
        for row in reads.find_exceptions(ExceptionQuery(status=None, search=needle, limit=1000)):
            found[row.id] = row
    rows = sorted(found.values(), key=lambda r: r.id)
    audit = [e for entity in entities[:AUDIT_ENTITIES] for e in reads.audit_trail(entity, 50)]
    commands = reads.commands_for(entities)
    return EngagementDetail(engagement, timeline(engagement, commands, audit, rows), rows, commands)


def deal_keys(states: Iterable[FlowState]) -> list[RecordKey]:
    """The CRM records ``(system, object, id)`` the Mobilize instances came from: read what
    the hub last applied of them and pass it to :func:`index`."""
    keys = (
        _record_key(str(s.data.get("deal_entity") or "")) for s in states if s.flow == "mobilize"
    )
    return [k for k in keys if k is not None]


def _record_key(entity: str) -> RecordKey | None:
    parts = entity.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def index(
    states: Sequence[FlowState], deals: Mapping[RecordKey, Mapping[str, Any]]
) -> list[Engagement]:
    """Every engagement the flow ``states`` describe, by deal id; ``deals``: the canonical
    opportunity last applied of each :func:`deal_keys` record (client and deal name)."""
    found = {e.deal_id: Engagement(e) for e in engagements(states)}
    for state in states:
        current = found.get(_deal_of(state) or "")
        if current is None:
            continue
        current.states.append(state)
        data = state.data
        if state.flow == "mobilize":
            current.deal_entity = str(data.get("deal_entity") or "")
            current.systems = {k: str(v) for k, v in (data.get("systems") or {}).items() if v}
            deal = deals.get(_record_key(current.deal_entity) or ("", "", ""), {})
            customer = deal.get("customer") or {}
            current.client = str(
                customer.get("legal_name") or current.status.customer or customer.get("name") or ""
            )
            current.deal_name = str(deal.get("name") or current.status.name or "")
            current.close_date = str(deal.get("close_date") or data.get("close_date") or "")
        elif state.flow == "invoice":
            for reference, invoice in (data.get("invoices") or {}).items():
                current.invoices[reference] = str((invoice or {}).get("number") or "")
    return sorted(found.values(), key=lambda e: (e.client.lower(), e.deal_id))


def search(engagements_: Iterable[Engagement], text: str) -> list[Engagement]:
    """The engagements whose client, deal name, deal id, project code, invoice reference or
    invoice number contains ``text`` (case-insensitive; blank: all)."""
    needle = text.strip().lower()
    if not needle:
        return list(engagements_)
    return [e for e in engagements_ if any(needle in h.lower() for h in _haystack(e))]


def _haystack(e: Engagement) -> list[str]:
    return [
        e.client,
        e.deal_name,
        e.deal_id,
        e.status.project_key,
        e.status.customer,
        *e.invoices,
        *e.invoices.values(),
    ]


def related_entities(e: Engagement) -> list[str]:
    """The entities commands, exceptions and audit lines about ``e`` name: the deal, its
    customer, projects, time entries and invoices in each system it was routed to."""
    entities = [e.deal_entity] if e.deal_entity else []
    mobilize = next((s.data for s in e.states if s.flow == "mobilize"), {})
    customer = (mobilize.get("customer") or {}).get("crm_id")
    for system in e.systems.values():
        if e.status.project_key:
            entities.append(f"{system}:project:{e.status.project_key}")
        for code in (customer, mobilize.get("erp_customer_code")):
            if code:
                entities.append(f"{system}:customer:{code}")
        entities += [f"{system}:invoice:{reference}" for reference in e.invoices]
    entities += [str(s.data["entity"]) for s in e.states if s.data.get("entity")]
    return list(dict.fromkeys(entities))


def timeline(
    e: Engagement,
    commands: Iterable[CommandRow],
    audit: Iterable[AuditEntry],
    exceptions: Iterable[ExceptionRow],
) -> list[TimelineEvent]:
    """``e``'s timeline, by stage (:data:`STAGES`) then time: the deal and where Mobilize
    stands (its blockers), each command sent (or waiting) for it, its time and invoices as
    the flows hold them, its payments, what people did (the audit trail) and what went
    wrong (``exceptions``, open or not)."""
    s = e.status
    events = [_deal_event(e)]
    for command in commands:
        c = command.command
        stage = _STAGE_OF_OPERATION.get(c.operation) or _stage_of_entity(c.entity)
        detail = command.status.value.replace("_", " ")
        if command.last_error:
            detail += f": {command.last_error}"
        at = command.updated_at or command.created_at
        tone = _TONE_OF_COMMAND.get(command.status.value, "waiting")
        events.append(TimelineEvent(stage, at, _words(c.operation), detail, c.system, tone))
    if s.time_entries:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(s.time_entries.items()))
        detail = f"{counts}; {s.hours_recorded} h recorded, {s.hours_held} h held"
        tone = "blocked" if s.time_entries.get("held") or s.time_entries.get("refused") else "ok"
        events.append(TimelineEvent("Time", None, "Time entries", detail, "", tone))
    for reference, number in e.invoices.items():
        title = f"Invoice {number or reference}"
        detail = f"reference {reference}" + ("" if number else ": not posted yet")
        events.append(
            TimelineEvent("Invoices", None, title, detail, "", "ok" if number else "waiting")
        )
    if s.invoiced or s.paid:
        detail = f"invoiced {s.invoiced}, paid {s.paid}, outstanding {s.outstanding}"
        events.append(TimelineEvent("Payments", None, s.payment_status, detail))
    for entry in audit:
        reason = str(entry.detail.get("reason") or "")
        title = f"{_words(entry.action)} by {entry.actor}"
        events.append(
            TimelineEvent(_stage_of_entity(entry.entity), entry.at, title, reason, "", "muted")
        )
    for row in exceptions:
        tone = "failed" if row.status == "open" else "muted"
        title = f"Exception {row.id} ({row.error_class.value}, {row.status})"
        system = row.entity.split(":", 1)[0]
        stage = _stage_of_entity(row.entity)
        events.append(TimelineEvent(stage, row.created_at, title, row.message, system, tone))
    return sorted(events, key=lambda ev: (STAGES.index(ev.stage), ev.at or _NO_TIME))


def _deal_event(e: Engagement) -> TimelineEvent:
    s = e.status
    title = f"Deal {e.deal_name or e.deal_id} closed won" + (
        f" on {e.close_date}" if e.close_date else ""
    )
    detail = f"mobilization {s.stage}"
    if s.blockers:
        detail += ": " + "; ".join(s.blockers)
    tone = (
        "blocked"
        if s.blockers
        else ("waiting" if s.stage in ("matching", "provisioning") else "ok")
    )
    return TimelineEvent("Closed won", None, title, detail, e.deal_entity.split(":", 1)[0], tone)


def _deal_of(state: FlowState) -> str | None:
    data = state.data
    if state.flow == "mobilize":
        return str(data.get("deal_id") or "") or None
    code = data.get("project_code") or data.get("project_key")
    parts = split_engagement_code(str(code or ""))
    return parts[1] if parts else (str(code) if code else None)


def _stage_of_entity(entity: str) -> str:
    parts = entity.split(":")
    return next((_STAGE_OF_KIND[p] for p in parts[1:2] if p in _STAGE_OF_KIND), "Closed won")


def _words(name: str) -> str:
    return name.replace("_", " ").capitalize()
