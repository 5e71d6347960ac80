"""The ``erp`` role's canonical operations (:mod:`closeloop.domain.operations`) as Tryton
keeps them: customers as ``party.party`` with identifiers and an address, projects as
``project.work`` (invoiced on timesheets for time and materials, manually for fixed fee and
retainer) with one child task per role keyed ``<project key>:<role>`` and priced at the
role's rate (the project itself at the highest) and one child work per milestone
(:mod:`.projects`), timesheet lines on those tasks, invoices by reference with their
charges (:mod:`.charges`), credit notes by credit reference (:mod:`.credits`). Each
function parses one command's payload and raises ``ValueError`` (pydantic's
``ValidationError`` is one) for a payload that does not fit its operation."""

from __future__ import annotations

from typing import Any

from closeloop.connectors.tryton.charges import Charge
from closeloop.connectors.tryton.credits import CreditRequest
from closeloop.connectors.tryton.invoicing import InvoiceRequest
from closeloop.connectors.tryton.keys import milestone_charge_key, milestone_work_key
from closeloop.connectors.tryton.operations import (
    CustomerSpec,
    MilestoneSpec,
    ProjectSpec,
    TaskSpec,
    TimesheetEntry,
)
from closeloop.domain.keys import task_key
from closeloop.domain.operations import (
    AddTimesheetLine,
    CreditInvoice,
    InvoiceProject,
    MatchCustomer,
    UpsertCustomer,
    UpsertProject,
)
from closeloop.mdm.matching import Party

INVOICE_METHODS = {"time_and_materials": "timesheet", "fixed_fee": "manual", "retainer": "manual"}
"""Tryton's project invoice method by billing method: only time and materials lets Tryton's
project invoicing bill the recorded time."""


def entry(payload: dict[str, Any]) -> TimesheetEntry:
    """A canonical :class:`AddTimesheetLine` as a timesheet entry."""
    line = AddTimesheetLine.model_validate(payload)
    return TimesheetEntry(
        key=line.key,
        employee_key=line.employee_key,
        employee_name=line.employee_name,
        task_key=line.task_key,
        date=line.date,
        hours=line.hours,
        description=line.description,
    )


def customer(payload: dict[str, Any]) -> CustomerSpec:
    """A canonical :class:`UpsertCustomer` as a customer spec."""
    customer = UpsertCustomer.model_validate(payload)
    return CustomerSpec(
        code=customer.code,
        name=customer.name,
        country=customer.country,
        tax_ids=customer.tax_ids,
        address=customer.address.model_dump() if customer.address else None,
        email=customer.email,
    )


def project(payload: dict[str, Any]) -> ProjectSpec:
    """A canonical :class:`UpsertProject` as Tryton keeps it: a ``project.work`` invoiced on
    timesheets (time and materials) or manually (fixed fee, retainer: :data:`INVOICE_METHODS`),
    one child task per role keyed ``<project key>:<role>`` and priced at the role's rate (the
    project itself at the highest), one child work per milestone keyed
    ``<project key>:milestone:<key>`` at its amount; its ``tax_treatment`` becomes the
    customer's tax rule in the company."""
    project = UpsertProject.model_validate(payload)
    if not project.customer_code:
        raise ValueError("an ERP project needs the customer's code")
    return ProjectSpec(
        key=project.key,
        name=project.name,
        customer_code=project.customer_code,
        tasks=tuple(
            TaskSpec(task_key(project.key, t.name), t.name, t.hourly_rate) for t in project.tasks
        ),
        list_price=max(t.hourly_rate for t in project.tasks),
        invoice_method=INVOICE_METHODS[project.billing_method],
        tax_treatment=project.tax_treatment,
        milestones=tuple(
            MilestoneSpec(
                key=milestone_work_key(project.key, m.key),
                name=m.name,
                amount=m.amount,
                charge_key=milestone_charge_key(m.key),
                planned_date=m.planned_date,
            )
            for m in project.milestones
        ),
    )


def project_result(works: dict[str, int]) -> dict[str, Any]:
    """The work ids by key; ``project_id``: the project's own (the first key, see
    :meth:`TrytonOperations.upsert_projects`)."""
    return {"works": works, "project_id": next(iter(works.values()), None)}


def invoice_request(payload: dict[str, Any]) -> InvoiceRequest:
    """A canonical :class:`InvoiceProject` as an invoice request (currency upper-cased), its
    charges with it."""
    invoice = InvoiceProject.model_validate(payload)
    return InvoiceRequest(
        project_key=invoice.project_key,
        up_to=invoice.up_to,
        reference=invoice.reference,
        invoice_date=invoice.invoice_date,
        currency=invoice.currency.strip().upper() if invoice.currency else None,
        payment_terms_days=invoice.payment_terms_days,
        mention=invoice.mention,
        customer_tax_id=invoice.customer_tax_id,
        charges=tuple(
            Charge(
                key=c.key,
                kind=c.kind,
                description=c.description,
                quantity=c.quantity,
                unit_price=c.unit_price,
                category=c.category,
                task=c.task,
                receipt=c.receipt,
            )
            for c in invoice.charges
        ),
        include_time=invoice.include_time,
    )


def credit(payload: dict[str, Any]) -> CreditRequest:
    """A canonical :class:`CreditInvoice` as a credit request."""
    op = CreditInvoice.model_validate(payload)
    return CreditRequest(
        reference=op.reference,
        credit_reference=op.credit_reference,
        reason=op.reason,
        line_keys=op.line_keys,
        credit_date=op.credit_date,
    )


def account(payload: dict[str, Any]) -> tuple[Party, float]:
    """The account a ``match_customer`` command describes, and its score threshold."""
    match = MatchCustomer.model_validate(payload)
    account = Party(
        id="deal",
        name=match.name,
        country=match.country,
        tax_ids=match.tax_ids,
        street=match.street,
        city=match.city,
        postal_code=match.postal_code,
    )
    return account, match.threshold
