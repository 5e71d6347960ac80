"""Change orders: what a new version of a mobilized deal changes in its engagement, and what
of that cannot be applied without a person.

The hub compares the terms it mobilized (:class:`EngagementTerms`) with the terms of the
deal's new version and returns a :class:`ChangeOrder`: the changes to apply, each one a
command of its own later (a new role becomes a task, a rate applies from its effective date,
a changed end date or budget updates the projects), the conflicts a person must decide
(business exceptions: never a silent overwrite of what was billed), and the fields that
changed but mean nothing to the engagement (logged with the reason, so that no version is
dropped without a trace).

Rules, in the words a finance person uses:

- a new role is a new task at its rate;
- a rate change applies from its effective date; time before that date keeps the old rate.
  A rate *cut* effective on or before the last day already invoiced would change invoiced
  time: a conflict (credit and re-invoice by hand, or move the effective date);
- a role removed closes its task; if time of that role was already invoiced, the task stays
  and a person decides (the invoiced time is not undone by a deal edit);
- hours sold (the budget), the end date, the fee: updated;
- a milestone added, moved (planned date) or renamed updates the plan; one re-valued or
  removed after it was invoiced is a conflict (credit it first), before that a change;
- the billing method of a mobilized engagement cannot change (a conflict); a retainer's
  terms or the expense markup apply from the next invoice on;
- the currency, the legal entity or the customer of a mobilized engagement cannot change:
  its invoices are in that currency, in that company's books, to that customer. A conflict.

Pure decisions: no I/O.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Milestone(BaseModel):
    """A milestone of the plan as a change order compares it: name, amount, planned date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    amount: Decimal
    planned_date: date | None = None


class EngagementTerms(BaseModel):
    """The terms of an engagement that a change order can touch: hourly ``rates`` and
    ``hours`` sold by role, ``currency`` (ISO 4217), selling ``legal_entity``, the
    customer's CRM id, ``start_date`` and ``end_date``, the ``billing_method``, a fixed
    fee's ``fee`` and ``milestones`` by key, and other fields (name, SOW reference) kept only
    to say that they changed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rates: dict[str, Decimal] = Field(min_length=1)
    hours: dict[str, Decimal] = Field(default_factory=dict)
    currency: str
    legal_entity: str | None = None
    customer: str
    start_date: date
    end_date: date | None = None
    name: str = ""
    sow_reference: str | None = None
    billing_method: str = "time_and_materials"
    fee: Decimal | None = None
    milestones: dict[str, Milestone] = Field(default_factory=dict)
    retainer: dict[str, str] | None = None
    expense_markup_percent: Decimal | None = None


class ChangeKind(StrEnum):
    """What a change does to the engagement's projects."""

    ROLE_ADDED = "role_added"
    RATE_CHANGED = "rate_changed"
    ROLE_REMOVED = "role_removed"
    HOURS_CHANGED = "hours_changed"
    END_DATE_CHANGED = "end_date_changed"
    FEE_CHANGED = "fee_changed"
    MILESTONE_ADDED = "milestone_added"
    MILESTONE_CHANGED = "milestone_changed"
    MILESTONE_REMOVED = "milestone_removed"
    TERMS_CHANGED = "terms_changed"


class Change(BaseModel):
    """One change to apply: its ``kind``, the ``role`` (or milestone key) it concerns (if
    any), the values ``before`` and ``after`` (as text), and the day it takes effect
    (rates)."""

    model_config = ConfigDict(frozen=True)

    kind: ChangeKind
    role: str | None = None
    before: str | None = None
    after: str | None = None
    effective_from: date | None = None

    def key(self) -> str:
        """A stable key of this change (part of its command's idempotency key): the same
        change of the same version is the same command."""
        subject = self.role or "-"
        when = self.effective_from.isoformat() if self.effective_from else "-"
        return f"{self.kind.value}:{subject}:{self.after}:{when}"


class Conflict(BaseModel):
    """A change the hub must not apply by itself: ``field``, the values and why, in words a
    finance person can act on."""

    model_config = ConfigDict(frozen=True)

    field: str
    before: str | None
    after: str | None
    reason: str


class ChangeOrder(BaseModel):
    """The outcome of comparing two versions of a deal's terms: ``changes`` to apply,
    ``conflicts`` for a person, ``ignored`` fields (name: why) that changed but do not
    touch the engagement."""

    model_config = ConfigDict(frozen=True)

    changes: tuple[Change, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    ignored: dict[str, str] = Field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing changed at all."""
        return not (self.changes or self.conflicts or self.ignored)


def compare(
    mobilized: EngagementTerms,
    amended: EngagementTerms,
    effective_from: date,
    invoiced_through: date | None = None,
    invoiced_roles: frozenset[str] = frozenset(),
    invoiced_milestones: frozenset[str] = frozenset(),
) -> ChangeOrder:
    """What ``amended`` changes in the engagement mobilized with ``mobilized``.

    ``effective_from``: the day new rates apply (the CRM's effective date of the amendment,
    else the day it was signed); ``invoiced_through``: the last day of time already
    invoiced (``None``: nothing invoiced); ``invoiced_roles``: roles with invoiced time.
    Changes come in a stable order (by kind, then role).
    """
    changes: list[Change] = []
    conflicts: list[Conflict] = []
    for name, label in (
        ("currency", "the currency"),
        ("legal_entity", "the selling legal entity"),
        ("customer", "the customer"),
        ("billing_method", "the billing method"),
    ):
        before, after = getattr(mobilized, name), getattr(amended, name)
        if before != after:
            conflicts.append(
                Conflict(
                    field=name,
                    before=before,
                    after=after,
                    reason=(
                        f"{label} of a mobilized engagement cannot change (its invoices are "
                        "in it): close this engagement and sell the rest as a new deal"
                    ),
                )
            )
    for role in sorted(set(amended.rates) - set(mobilized.rates)):
        rate = str(amended.rates[role])
        changes.append(Change(kind=ChangeKind.ROLE_ADDED, role=role, after=rate))
    for role in sorted(set(mobilized.rates) & set(amended.rates)):
        old, new = mobilized.rates[role], amended.rates[role]
        if old == new:
            continue
        if new < old and invoiced_through is not None and effective_from <= invoiced_through:
            conflicts.append(
                Conflict(
                    field=f"rates.{role}",
                    before=str(old),
                    after=str(new),
                    reason=(
                        f"the rate of {role} is cut from {old} to {new} from "
                        f"{effective_from.isoformat()}, but time up to "
                        f"{invoiced_through.isoformat()} is invoiced at {old}: credit and "
                        "re-invoice it by hand, or make the cut effective after that day"
                    ),
                )
            )
            continue
        changes.append(
            Change(
                kind=ChangeKind.RATE_CHANGED,
                role=role,
                before=str(old),
                after=str(new),
                effective_from=effective_from,
            )
        )
    for role in sorted(set(mobilized.rates) - set(amended.rates)):
        if role in invoiced_roles:
            conflicts.append(
                Conflict(
                    field=f"rates.{role}",
                    before=str(mobilized.rates[role]),
                    after=None,
                    reason=(
                        f"{role} was removed from the deal, but its time is already "
                        "invoiced: its task stays open; close it (and credit what should "
                        "not have been billed) by hand"
                    ),
                )
            )
        else:
            changes.append(
                Change(kind=ChangeKind.ROLE_REMOVED, role=role, before=str(mobilized.rates[role]))
            )
    for role in sorted(set(mobilized.hours) | set(amended.hours)):
        before_hours, after_hours = mobilized.hours.get(role), amended.hours.get(role)
        if role in amended.rates and before_hours != after_hours and role in mobilized.rates:
            changes.append(
                Change(
                    kind=ChangeKind.HOURS_CHANGED,
                    role=role,
                    before=str(before_hours) if before_hours is not None else None,
                    after=str(after_hours) if after_hours is not None else None,
                )
            )
    if mobilized.end_date != amended.end_date:
        changes.append(
            Change(
                kind=ChangeKind.END_DATE_CHANGED,
                before=mobilized.end_date.isoformat() if mobilized.end_date else None,
                after=amended.end_date.isoformat() if amended.end_date else None,
            )
        )
    if mobilized.fee != amended.fee:
        changes.append(
            Change(
                kind=ChangeKind.FEE_CHANGED, before=_text(mobilized.fee), after=_text(amended.fee)
            )
        )
    for name in ("retainer", "expense_markup_percent"):  # from the next invoice on
        before, after = getattr(mobilized, name), getattr(amended, name)
        if before != after:
            changes.append(
                Change(
                    kind=ChangeKind.TERMS_CHANGED,
                    role=name,
                    before=_terms_text(before),
                    after=_terms_text(after),
                )
            )
    milestone_changes, milestone_conflicts = _milestones(mobilized, amended, invoiced_milestones)
    changes += milestone_changes
    conflicts += milestone_conflicts
    ignored = {
        name: why
        for name, why in (
            ("name", "the project keeps the name it was mobilized with"),
            ("sow_reference", "kept for reference only; nothing in the projects changes"),
            ("start_date", "the engagement has started; time is billed from its entries"),
        )
        if getattr(mobilized, name) != getattr(amended, name)
    }
    order = list(ChangeKind)
    changes.sort(key=lambda c: (order.index(c.kind), c.role or ""))
    return ChangeOrder(changes=tuple(changes), conflicts=tuple(conflicts), ignored=ignored)


def _milestones(
    mobilized: EngagementTerms, amended: EngagementTerms, invoiced: frozenset[str]
) -> tuple[list[Change], list[Conflict]]:
    """Milestones added, moved, renamed, re-valued or removed; what touches an invoiced one's
    amount is a conflict."""
    changes: list[Change] = []
    conflicts: list[Conflict] = []
    before, after = mobilized.milestones, amended.milestones
    for key in sorted(set(after) - set(before)):
        changes.append(
            Change(kind=ChangeKind.MILESTONE_ADDED, role=key, after=_describe(after[key]))
        )
    for key in sorted(set(before) & set(after)):
        old, new = before[key], after[key]
        if old == new:
            continue
        if key in invoiced and old.amount != new.amount:
            conflicts.append(
                Conflict(
                    field=f"milestones.{key}",
                    before=_describe(old),
                    after=_describe(new),
                    reason=(
                        f"milestone {old.name!r} is invoiced at {old.amount}: re-valuing it to "
                        f"{new.amount} needs a credit note first (closeloop credit), then the "
                        "new amount can be invoiced"
                    ),
                )
            )
            continue
        changes.append(
            Change(
                kind=ChangeKind.MILESTONE_CHANGED,
                role=key,
                before=_describe(old),
                after=_describe(new),
            )
        )
    for key in sorted(set(before) - set(after)):
        if key in invoiced:
            conflicts.append(
                Conflict(
                    field=f"milestones.{key}",
                    before=_describe(before[key]),
                    after=None,
                    reason=(
                        f"milestone {before[key].name!r} was removed from the plan after it "
                        "was invoiced: credit its invoice (closeloop credit) if it should not "
                        "be billed; the hub leaves it as it is"
                    ),
                )
            )
        else:
            changes.append(
                Change(kind=ChangeKind.MILESTONE_REMOVED, role=key, before=_describe(before[key]))
            )
    return changes, conflicts


def _describe(milestone: Milestone) -> str:
    when = milestone.planned_date.isoformat() if milestone.planned_date else "undated"
    return f"{milestone.name} {milestone.amount} {when}"


def _terms_text(value: dict[str, str] | Decimal | None) -> str | None:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    return _text(value)


def _text(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def rate_on(day: date, before: Decimal, change: Change) -> Decimal:
    """The hourly rate of a role for time on ``day`` under a :data:`ChangeKind.RATE_CHANGED`
    ``change`` (its old rate ``before`` until the day before it takes effect)."""
    if change.kind is not ChangeKind.RATE_CHANGED or change.effective_from is None:
        raise ValueError(f"not a rate change: {change.kind.value}")
    return Decimal(str(change.after)) if day >= change.effective_from else before
