"""Projects, tasks, milestones, assignments, time entries and expenses (the PSA side)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from closeloop.domain.canonical.base import Canonical, Quantity, Ref
from closeloop.domain.canonical.sales import BillingMethod
from closeloop.domain.money import Money


class ProjectStatus(StrEnum):
    """A project's status in the PSA and the ERP."""

    PROVISIONAL = "provisional"
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    CLOSED = "closed"


class Task(Canonical):
    """A unit of work on a project that time is logged against."""

    CANONICAL_TYPE = "task"
    name: str = Field(min_length=1)
    project: Ref | None = None
    billable: bool = True
    hourly_rate: Money | None = None


class Milestone(Canonical):
    """A project milestone; for fixed-fee work, what is billed when it is reached."""

    CANONICAL_TYPE = "milestone"
    name: str = Field(min_length=1)
    project: Ref | None = None
    due_date: date | None = None
    amount: Money | None = None
    reached: bool = False


class Project(Canonical):
    """Delivery of an engagement."""

    CANONICAL_TYPE = "project"
    name: str = Field(min_length=1)
    code: str | None = None
    account: Ref
    engagement: Ref | None = None
    status: ProjectStatus = ProjectStatus.ACTIVE
    billing_method: BillingMethod | None = None
    budget: Money | None = None
    start_date: date | None = None
    end_date: date | None = None
    tasks: tuple[Task, ...] = ()

    @model_validator(mode="after")
    def _dates(self) -> Project:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class Assignment(Canonical):
    """A person staffed on a project (optionally on one task) at a role and rate."""

    CANONICAL_TYPE = "assignment"
    person: Ref
    project: Ref
    task: Ref | None = None
    role: str | None = None
    hourly_rate: Money | None = None
    active: bool = True


class ApprovalState(StrEnum):
    """Where a time entry or expense stands in the approval workflow."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class TimeEntry(Canonical):
    """Hours a person spent on a project task on one day.

    ``hours`` is more than 0 and at most 24. ``rate`` is the billable hourly rate when known.
    Version 2 adds the names the PSA shows (``person_name``, ``project_code``, ``task_name``),
    by which the ERP's employee, project and task are found.
    """

    CANONICAL_TYPE = "time_entry"
    SCHEMA_VERSION = 2
    date: date
    hours: Quantity
    billable: bool
    approval_state: ApprovalState = ApprovalState.DRAFT
    person: Ref
    project: Ref
    task: Ref | None = None
    rate: Money | None = None
    notes: str | None = None
    invoice: Ref | None = Field(default=None, description="the invoice that billed it")
    person_name: str | None = None
    project_code: str | None = None
    task_name: str | None = None

    @field_validator("hours")
    @classmethod
    def _day(cls, hours: Decimal) -> Decimal:
        if not Decimal(0) < hours <= Decimal(24):
            raise ValueError("hours must be more than 0 and at most 24")
        return hours


class Expense(Canonical):
    """A cost a person incurred on a project, possibly re-billed to the client.

    Version 2 adds what billing needs: the project's code (by which the engagement is
    found), the person's name, ``receipt_url`` (where the receipt is kept in the PSA) and
    ``invoice`` (the PSA invoice that billed it, once billed). ``amount`` is taken as the PSA
    holds it (a negative one is refused by billing with a business exception)."""

    CANONICAL_TYPE = "expense"
    SCHEMA_VERSION = 2
    date: date
    amount: Money
    category: str = Field(min_length=1)
    billable: bool
    approval_state: ApprovalState = ApprovalState.DRAFT
    person: Ref | None = None
    project: Ref
    notes: str | None = None
    units: Quantity | None = None
    project_code: str | None = None
    person_name: str | None = None
    receipt_url: str | None = None
    invoice: Ref | None = Field(default=None, description="the PSA invoice that billed it")
