"""The typed operations flows ask of a role (``crm``, ``psa``, ``erp``), whatever system plays it.

A flow builds an operation (a pydantic model below) and :func:`role_command` turns it into an
outbox :class:`~closeloop.domain.commands.Command`: the operation's name, its JSON payload and
an idempotency key ``<system>:<operation>:<key>`` made by :func:`idempotency_key` from the
configured system name. A connector reads the payload back with :func:`parse_operation` and
translates it into its vendor's calls and fields; the vendor's names never reach the flows.

Operations by role:

- ``crm``: :class:`UpdateEngagement` (where the deal's mobilization stands),
  :class:`UpdateBillingTotals` (invoiced, paid, outstanding on the deal or its account);
- ``psa``: :class:`UpsertProject`, :class:`CloseProject`, :class:`MarkBilled`,
  :class:`UnmarkBilled`;
- ``erp``: :class:`MatchCustomer`, :class:`UpsertCustomer`, :class:`UpsertProject`,
  :class:`CloseProject`, :class:`AddTimesheetLine`, :class:`InvoiceProject` (time and
  :class:`ChargeLine` charges: milestones, retainer fees, overage, expenses),
  :class:`PostInvoice`, :class:`CreditInvoice`.

Amounts are ``Decimal`` (JSON strings on the wire), dates ISO dates.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from closeloop.domain.commands import Command, Impact
from closeloop.domain.taxrules import TaxTreatment


class Role(StrEnum):
    """The part a system plays for the firm (docs/architecture.md, systems, roles and routing)."""

    CRM = "crm"
    PSA = "psa"
    ERP = "erp"


class Operation(BaseModel):
    """A canonical operation. Subclasses set ``operation`` (its name) and ``roles``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: ClassVar[str] = ""
    roles: ClassVar[tuple[Role, ...]] = ()


class Address(BaseModel):
    """A postal address as an ERP customer keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line1: str = ""
    city: str = ""
    postal_code: str = ""


# --- CRM ------------------------------------------------------------------------------------
class UpdateEngagement(Operation):
    """Tell the CRM's deal where its mobilization stands: ``status`` (Blocked, Provisional,
    Mobilized, Closed) and ``message``; once set up, the ERP customer code, the PSA project id
    and the project key. A field left ``None`` is not written."""

    operation: ClassVar[str] = "update_engagement"
    roles: ClassVar[tuple[Role, ...]] = (Role.CRM,)
    deal_id: str
    status: str
    message: str = ""
    customer_code: str | None = None
    psa_project_id: str | None = None
    project_key: str | None = None


class UpdateBillingTotals(Operation):
    """The ERP's invoicing totals of a deal (``record="opportunity"``) or of its account
    (``"account"``), in the invoice currency (``currency``; an account's in its own currency,
    ``by_currency`` listing every currency's totals, one line each). ``overdue``: the amount
    outstanding past its due date; ``days_past_due``: of the oldest overdue invoice."""

    operation: ClassVar[str] = "update_billing_totals"
    roles: ClassVar[tuple[Role, ...]] = (Role.CRM,)
    record: Literal["opportunity", "account"]
    record_id: str
    invoiced: Decimal
    paid: Decimal
    outstanding: Decimal
    last_invoice_number: str | None = None
    payment_status: str
    currency: str | None = None
    overdue: Decimal = Decimal(0)
    days_past_due: int = Field(default=0, ge=0)
    by_currency: str = ""


# --- PSA and ERP ----------------------------------------------------------------------------
class ProjectTask(BaseModel):
    """A task of a project: the role sold, its hourly rate and the hours sold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    hourly_rate: Decimal
    budget_hours: Decimal = Decimal(0)


class ProjectAssignment(BaseModel):
    """A person staffed on a project (by e-mail), at ``hourly_rate`` when it differs from
    the task's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: str = Field(min_length=3)
    hourly_rate: Decimal | None = None
    is_project_manager: bool = False


class ProjectMilestone(BaseModel):
    """A milestone of a fixed-fee project: ``key`` (the CRM's milestone id, stable), its name,
    ``amount`` in the project's currency and planned date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    name: str = Field(min_length=1)
    amount: Decimal = Field(gt=0)
    planned_date: date | None = None


BillingMethodName = Literal["time_and_materials", "fixed_fee", "retainer"]


class UpsertProject(Operation):
    """Create or update the engagement's project ``key`` for the customer (by name in a PSA,
    by ``customer_code`` in an ERP), with its tasks at the rate card's rates and the people
    staffed on it (``assignments``; a system that does not staff projects ignores them).
    ``legal_entity``: the selling entity's code; ``tax_treatment``: how the customer's
    invoices of this entity are taxed (:mod:`closeloop.domain.taxrules`), which an ERP
    applies with its own mechanism (Tryton: the customer's tax rule in the entity's
    company).

    ``billing_method``: ``time_and_materials`` (the ERP invoices the recorded time);
    ``fixed_fee`` (a PSA fixed-fee project of ``fee``; the ERP keeps one element per
    ``milestones`` entry and records time for cost only, never billing it) or ``retainer``
    (the ERP records time for cost; the hub bills the fee and overage as charges). An
    upsert of an existing project updates its name, fee, tasks (new ones added, rates
    changed) and milestones (added, renamed, re-valued, moved); it never removes a task or a
    milestone."""

    operation: ClassVar[str] = "upsert_project"
    roles: ClassVar[tuple[Role, ...]] = (Role.PSA, Role.ERP)
    key: str = Field(min_length=1)
    name: str
    customer_name: str
    customer_code: str | None = None
    currency: str
    starts_on: date | None = None
    billing_method: BillingMethodName = "time_and_materials"
    tasks: tuple[ProjectTask, ...] = Field(min_length=1)
    assignments: tuple[ProjectAssignment, ...] = ()
    legal_entity: str | None = None
    tax_treatment: TaxTreatment | None = None
    fee: Decimal | None = Field(default=None, gt=0)
    milestones: tuple[ProjectMilestone, ...] = ()
    ends_on: date | None = None

    @model_validator(mode="after")
    def _fee(self) -> UpsertProject:
        if self.billing_method == "fixed_fee" and self.fee is None:
            raise ValueError("a fixed-fee project needs its fee")
        return self


class CloseProject(Operation):
    """Close (never delete) the project ``key``."""

    operation: ClassVar[str] = "close_project"
    roles: ClassVar[tuple[Role, ...]] = (Role.PSA, Role.ERP)
    key: str = Field(min_length=1)


class MarkBilled(Operation):
    """Mark the engagement's approved time from ``period_start`` to ``period_end`` billed in
    the PSA, by a PSA invoice numbered ``number`` (unique in the PSA: the hub's invoice
    reference) whose ``subject`` names the ERP's invoice; with ``expenses``, the approved
    billable expenses of that range too (a receipt stays attached to its expense)."""

    operation: ClassVar[str] = "mark_billed"
    roles: ClassVar[tuple[Role, ...]] = (Role.PSA,)
    number: str
    customer_name: str
    project_keys: tuple[str, ...]
    period_start: date
    period_end: date
    subject: str = ""
    expenses: bool = False
    time: bool = True

    @model_validator(mode="after")
    def _something(self) -> MarkBilled:
        if not (self.time or self.expenses):
            raise ValueError("mark_billed marks time, expenses or both")
        return self


class UnmarkBilled(Operation):
    """Undo :class:`MarkBilled` ``number``: the PSA invoice numbered ``number`` is removed,
    so its time entries and expenses are unbilled again (to be billed anew after a credit
    note). Nothing to undo is not an error."""

    operation: ClassVar[str] = "unmark_billed"
    roles: ClassVar[tuple[Role, ...]] = (Role.PSA,)
    number: str = Field(min_length=1)


# --- ERP ------------------------------------------------------------------------------------
class MatchCustomer(Operation):
    """Which ERP customer an account is: tax id exact, else name and address similarity of
    at least ``threshold`` (0-100)."""

    operation: ClassVar[str] = "match_customer"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    name: str
    country: str
    tax_ids: tuple[str, ...] = ()
    street: str = ""
    city: str = ""
    postal_code: str = ""
    threshold: float = Field(default=85.0, ge=0, le=100)


class UpsertCustomer(Operation):
    """Create or update the ERP customer ``code`` with its tax ids (``(scheme, id)``)."""

    operation: ClassVar[str] = "upsert_customer"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    code: str = Field(min_length=1)
    name: str
    country: str
    tax_ids: tuple[tuple[str, str], ...] = ()
    address: Address | None = None
    email: str | None = None


class AddTimesheetLine(Operation):
    """Record ``hours`` of a person on a project's task as one timesheet line, once per
    ``key`` (the PSA time entry). ``task_key`` names the task as the project's set-up did
    (:func:`closeloop.domain.keys.task_key`: ``<project key>:<task name>``)."""

    operation: ClassVar[str] = "add_timesheet_line"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    key: str = Field(min_length=1)
    employee_key: str
    employee_name: str
    task_key: str
    date: date
    hours: Decimal
    description: str = ""


ChargeKind = Literal["milestone", "retainer", "overage", "expense"]


class ChargeLine(BaseModel):
    """A line an invoice bills besides recorded time: a milestone, a retainer fee, overage
    hours, a re-billed expense. ``key`` is unique in the ERP for the thing billed
    (``milestone:<id>``, ``retainer:<period>``, ``overage:<period>:<role>``,
    ``expense:<psa>-<id>``): an ERP bills a key once, and a credit note names lines by it.
    ``amount`` is ``quantity`` x ``unit_price`` rounded to the currency's minor unit by the
    ERP. ``category``: an expense's category (the ERP's product for it, see the connector's
    configuration); ``task``: the project element it belongs to (a milestone's key, an
    overage's role); ``receipt``: where an expense's receipt is (a URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    kind: ChargeKind
    description: str = Field(min_length=1)
    quantity: Decimal = Field(gt=0)
    unit_price: Decimal = Field(ge=0)
    category: str | None = None
    task: str | None = None
    receipt: str | None = None


class InvoiceProject(Operation):
    """Invoice the project's uninvoiced lines up to ``up_to`` as the invoice ``reference``,
    dated ``invoice_date`` (today when ``None``), in ``currency`` (the deal's; the entity's
    when ``None``), due ``payment_terms_days`` after its date, carrying ``mention`` (the
    legal mention of its tax treatment, e.g. reverse charge) and the customer's VAT number
    ``customer_tax_id`` when the mention needs it. ``charges`` are billed on the same
    invoice (a charge whose key was billed before is left out; an invoice of charges only
    has ``include_time`` false). An ERP refuses it, creating nothing, when it has no
    exchange rate of ``currency`` for the invoice date."""

    operation: ClassVar[str] = "invoice_project"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    project_key: str
    up_to: date
    reference: str
    invoice_date: date | None = None
    currency: str | None = None
    payment_terms_days: int | None = Field(default=None, ge=0, le=366)
    mention: str = ""
    customer_tax_id: str | None = None
    charges: tuple[ChargeLine, ...] = ()
    include_time: bool = True


class PostInvoice(Operation):
    """Post the invoice ``reference`` (it gets its number)."""

    operation: ClassVar[str] = "post_invoice"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    reference: str


class CreditInvoice(Operation):
    """Credit the posted invoice ``reference`` with a credit note referenced
    ``credit_reference``, dated ``credit_date`` (today when ``None``), carrying ``reason``;
    the whole invoice when ``line_keys`` is empty, else only its lines with those charge keys
    (``time`` names every time line). The credit note references the original invoice and
    is posted. Raises (a business exception) for an invoice that is not posted or paid, or a
    key the invoice does not bill."""

    operation: ClassVar[str] = "credit_invoice"
    roles: ClassVar[tuple[Role, ...]] = (Role.ERP,)
    reference: str = Field(min_length=1)
    credit_reference: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    line_keys: tuple[str, ...] = ()
    credit_date: date | None = None


OPERATIONS: dict[str, type[Operation]] = {
    op.operation: op
    for op in (
        UpdateEngagement,
        UpdateBillingTotals,
        UpsertProject,
        CloseProject,
        MarkBilled,
        UnmarkBilled,
        MatchCustomer,
        UpsertCustomer,
        AddTimesheetLine,
        InvoiceProject,
        PostInvoice,
        CreditInvoice,
    )
}
"""Every canonical operation by name."""


def idempotency_key(system: str, operation: str, key: str) -> str:
    """``<system>:<operation>:<key>``: the one form of the hub's idempotency keys.

    ``system`` is the configured system name, ``key`` what the operation makes visible in
    the target (a project key, an invoice reference, a time entry's key).
    """
    return f"{system}:{operation}:{key}"


def split_idempotency_key(idempotency_key: str) -> tuple[str, str, str]:
    """``(system, operation, key)`` of a key made by :func:`idempotency_key`.

    Raises ``ValueError`` for a key of another form.
    """
    parts = idempotency_key.split(":", 2)
    if len(parts) != 3:
        raise ValueError(f"not an idempotency key of the form system:operation:key: {parts}")
    return parts[0], parts[1], parts[2]


def role_command(
    system: str,
    operation: Operation,
    *,
    business_key: str,
    key: str,
    entity: str,
    impact: Impact,
) -> Command:
    """The outbox command asking ``system`` for ``operation``; ``key`` goes into the
    idempotency key (see :func:`idempotency_key`), ``entity`` names the record it writes."""
    return Command(
        system=system,
        operation=operation.operation,
        business_key=business_key,
        idempotency_key=idempotency_key(system, operation.operation, key),
        payload=operation.model_dump(mode="json"),
        entity=entity,
        impact=impact,
    )


def parse_operation(command: Command) -> Operation:
    """The typed operation a command carries.

    Raises ``ValueError`` naming the problem: an operation that is not canonical, or a
    payload that does not fit it (pydantic's ``ValidationError`` is a ``ValueError``).
    """
    model = OPERATIONS.get(command.operation)
    if model is None:
        raise ValueError(f"{command.operation!r} is not a canonical operation")
    return model.model_validate(command.payload)


__all__ = [
    "OPERATIONS",
    "AddTimesheetLine",
    "Address",
    "ChargeLine",
    "CloseProject",
    "CreditInvoice",
    "InvoiceProject",
    "MarkBilled",
    "MatchCustomer",
    "Operation",
    "PostInvoice",
    "ProjectAssignment",
    "ProjectMilestone",
    "ProjectTask",
    "Role",
    "UnmarkBilled",
    "UpdateBillingTotals",
    "UpdateEngagement",
    "UpsertCustomer",
    "UpsertProject",
    "ValidationError",
    "idempotency_key",
    "parse_operation",
    "role_command",
    "split_idempotency_key",
]
