"""Tryton's records as reconciliation facts (:mod:`closeloop.ports.reconcile`), read in
pages by id (``search_read`` with dotted fields, ``id > last``, :data:`PAGE` rows a call),
in the connector's company only.

What each domain reads, and how Tryton's records map to the canonical fields:

``customers``
    The parties of this company's hub projects (``project.work`` of type project whose
    ``comment`` is ``closeloop:<project key>``): parties are shared by the companies of a
    database, so a party is a customer of this company when one of its projects here is.
    Read through the projects' pages (the party's fields dotted), each party once. ``key``:
    the party ``code``; ``external_id``: the party id. ``legal_name``: the party's name;
    ``tax_ids``: the codes of its typed identifiers, upper case, alphanumerics only,
    sorted; ``country``: of its first invoice address, else its first address (left out
    without one). ``currency`` and ``payment_terms_days`` are left out: a party has no
    currency in Tryton (without the sale module), and the hub writes the payment term on
    each invoice ("Net <N> days"), never on the party. ``modified_at``: the latest write
    of the party, its addresses and identifiers.
``projects``
    This company's projects keyed ``closeloop:<project key>`` whose key has the form of
    one (:func:`~closeloop.domain.keys.split_engagement_code`). ``external_id``: the work
    id. ``status``: ``closed`` when the work's status is a done one (progress 1, Tryton's
    "Done", which :meth:`~.projects.ProjectOperations.close_project` sets), else
    ``open``. ``rates``: each role's list price in force today: a role's own task
    ``<role>``, or the latest of its rate-change tasks ``<role> (from <ISO date>)``
    (:mod:`closeloop.flows.amend`) effective on or before today (milestone works are no
    tasks). ``billing_method``: ``time_and_materials`` (invoiced on timesheets), else
    ``fixed_fee`` when the project has milestones, ``retainer`` without. ``fee`` is left
    out: Tryton keeps no fee, and its milestones (which the upsert never removes) need not
    add up to it. ``modified_at``: the latest write of the project and its tasks.
``time``
    This company's timesheet lines whose ``description`` ends with the hub's marker
    ``[cl:<key>]`` (:data:`~.keys.LINE_MARK`). ``key``: the marker's key; ``external_id``:
    the line id. ``project_key``: the key of the task's project (left out for a line on a
    work the hub does not know); ``task``: the task's name as the hub keyed it, a
    rate-change task's mapped back to its role; ``date`` (ISO); ``hours``: the duration in
    hours, two places (half up); ``invoice_reference``: the reference of the invoice its
    invoice line belongs to, ``None`` when it has none, or its invoice is cancelled.
``invoices``
    This company's customer invoices and credit notes whose ``reference`` has the hub's
    form ``<project key>/...``, read with :meth:`~.invoice_reads.InvoiceReading.read_invoices`.
    ``key``: the reference; ``external_id``: the invoice id; ``project_key``, ``currency``,
    ``state``, ``number``, ``total`` (``total_amount``), ``outstanding``
    (``amount_to_pay``), ``invoice_date``, ``due_date`` (ISO or ``None``),
    ``credited_reference``.
``charges``
    This company's customer invoice and credit-note lines carrying a charge key, read by
    :func:`~.charge_facts.charge_facts` (whose docstring says how).

Each domain costs one call per :data:`PAGE` records it reads (and one more when the count
is a multiple of it); the customers' cost is that of the projects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from closeloop.connectors.tryton.charge_facts import charge_facts
from closeloop.connectors.tryton.invoice_reads import InvoiceState
from closeloop.connectors.tryton.keys import LINE_MARK, WORK_KEY
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.domain.keys import role_of, split_engagement_code
from closeloop.ports.reconcile import CHARGES, CUSTOMERS, INVOICES, PROJECTS, TIME, Fact

T = TypeVar("T")

PAGE = 500
"""Rows per ``search_read`` (the connector's page)."""

INVOICE_OBJECT = "account.invoice"
"""The change feed's object of invoices (the connector's ``INVOICES``)."""

DOMAINS = (CUSTOMERS, PROJECTS, TIME, INVOICES, CHARGES)
"""The reconciliation domains Tryton holds records of."""

_KEY_PREFIX = WORK_KEY.format(key="")
_MARK_OPEN = LINE_MARK.format(key="").removesuffix("]")  # "[cl:"
_CENT = Decimal("0.01")

_CUSTOMER_FIELDS = [
    "comment",
    "party",
    "party.code",
    "party.name",
    "party.write_date",
    "party.create_date",
    "party.identifiers.type",
    "party.identifiers.code",
    "party.identifiers.write_date",
    "party.identifiers.create_date",
    "party.addresses.invoice",
    "party.addresses.country.code",
    "party.addresses.street",
    "party.addresses.city",
    "party.addresses.postal_code",
    "party.addresses.write_date",
    "party.addresses.create_date",
]
_PROJECT_FIELDS = [
    "comment",
    "status.progress",
    "project_invoice_method",
    "write_date",
    "create_date",
    "children.type",
    "children.name",
    "children.comment",
    "children.list_price",
    "children.write_date",
    "children.create_date",
]
_LINE_FIELDS = [
    "description",
    "date",
    "duration",
    "write_date",
    "create_date",
    "work.origin.type",
    "work.origin.name",
    "work.origin.comment",
    "work.origin.parent.comment",
    "invoice_line.invoice.reference",
    "invoice_line.invoice.state",
]


def read_facts(
    ops: TrytonOperations,
    system: str,
    domain: str,
    *,
    page: int = PAGE,
    today: date | None = None,
) -> Iterator[list[Fact]]:
    """Pages of the facts of ``domain`` (one of :data:`DOMAINS`) in the company of ``ops``,
    named after the configured ``system`` (the module docstring says what each holds);
    a page per ``search_read`` of ``page`` rows that yielded any fact. ``today``: the day
    whose rates are in force (default: today, UTC).

    Raises ``ValueError`` at once for a domain Tryton holds no records of; while reading,
    :class:`~closeloop.ports.connector.TransientError` when Tryton cannot answer now (and
    the RPC client's other errors).
    """
    if domain == CUSTOMERS:
        return customer_facts(ops, system, page=page)
    if domain == PROJECTS:
        return project_facts(ops, system, page=page, today=today)
    if domain == TIME:
        return time_facts(ops, system, page=page)
    if domain == INVOICES:
        return invoice_facts(ops, system, page=page)
    if domain == CHARGES:
        return charge_facts(ops, system, page=page)
    raise ValueError(f"Tryton holds no {domain!r} records to reconcile (it holds {DOMAINS})")


def customer_facts(ops: TrytonOperations, system: str, *, page: int = PAGE) -> Iterator[list[Fact]]:
    """The ``customers`` facts (module docstring): each party of the company's hub projects
    once, in pages of the projects read."""
    seen: set[int] = set()
    for rows in _hub_projects(ops, _CUSTOMER_FIELDS, page):
        facts = []
        for row in rows:
            party = row.get("party.")
            if not party or party["id"] in seen or not party.get("code"):
                continue
            seen.add(party["id"])
            facts.append(_customer(party, system))
        if facts:
            yield facts


def project_facts(
    ops: TrytonOperations, system: str, *, page: int = PAGE, today: date | None = None
) -> Iterator[list[Fact]]:
    """The ``projects`` facts (module docstring), rates as in force on ``today`` (default:
    today, UTC)."""
    day = today or datetime.now(UTC).date()
    for rows in _hub_projects(ops, _PROJECT_FIELDS, page):
        yield [_project(row, system, day) for row in rows]


def time_facts(ops: TrytonOperations, system: str, *, page: int = PAGE) -> Iterator[list[Fact]]:
    """The ``time`` facts (module docstring): the company's timesheet lines carrying the
    hub's marker."""
    domain = [
        ["company", "=", ops.ids.company],
        ["description", "like", f"%{_MARK_OPEN}%"],
    ]
    for rows in _pages(
        lambda last: ops.rpc.search_read(
            "timesheet.line",
            [*domain, ["id", ">", last]],
            _LINE_FIELDS,
            limit=page,
            order=[["id", "ASC"]],
        ),
        lambda row: int(row["id"]),
        page,
    ):
        facts = [fact for row in rows if (fact := _line(row, system)) is not None]
        if facts:
            yield facts


def invoice_facts(ops: TrytonOperations, system: str, *, page: int = PAGE) -> Iterator[list[Fact]]:
    """The ``invoices`` facts (module docstring): the company's customer invoices and
    credit notes referenced ``<project key>/...``."""
    for invoices in _pages(
        lambda last: ops.read_invoices(
            [["reference", "like", "%/%"], ["id", ">", last]],
            limit=page,
            order=[["id", "ASC"]],
        ),
        lambda invoice: invoice.id,
        page,
    ):
        facts = [_invoice(i, system) for i in invoices if _invoice_project(i.reference)]
        if facts:
            yield facts


def hours_of(duration: timedelta | None) -> Decimal:
    """A duration in hours, two places (half up); ``None`` is zero."""
    if duration is None:
        return Decimal("0.00")
    seconds = Decimal(str(duration.total_seconds()))
    return (seconds / 3600).quantize(_CENT, rounding=ROUND_HALF_UP)


# --- reading ----------------------------------------------------------------------------
def _pages(
    fetch: Callable[[int], Sequence[T]], ident: Callable[[T], int], page: int
) -> Iterator[Sequence[T]]:
    """Keyset pages: ``fetch(last)`` reads up to ``page`` records of id above ``last`` in
    id order; stops after a short page."""
    last = 0
    while True:
        rows = fetch(last)
        if rows:
            yield rows
        if len(rows) < page:
            return
        last = ident(rows[-1])


def _hub_projects(
    ops: TrytonOperations, fields: list[str], page: int
) -> Iterator[list[dict[str, Any]]]:
    """Pages of the company's projects keyed by the hub with a project key, each row with
    ``fields`` and its key under ``"key"``."""
    domain = [
        ["company", "=", ops.ids.company],
        ["type", "=", "project"],
        ["comment", "like", f"{_KEY_PREFIX}%"],
    ]
    for rows in _pages(
        lambda last: ops.rpc.search_read(
            "project.work",
            [*domain, ["id", ">", last]],
            fields,
            limit=page,
            order=[["id", "ASC"]],
            context={"active_test": False},
        ),
        lambda row: int(row["id"]),
        page,
    ):
        keyed = []
        for row in rows:
            key = _work_key(row.get("comment"))
            if key is not None and split_engagement_code(key) is not None:
                keyed.append({**row, "key": key})
        if keyed:
            yield keyed


# --- mapping ----------------------------------------------------------------------------
def _customer(party: dict[str, Any], system: str) -> Fact:
    identifiers = party.get("identifiers.") or []
    addresses = party.get("addresses.") or []
    fields: dict[str, Any] = {
        "legal_name": party.get("name") or "",
        "tax_ids": tuple(
            sorted(
                {
                    _alphanumeric(i["code"])
                    for i in identifiers
                    if i.get("type") and _alphanumeric(i.get("code"))
                }
            )
        ),
    }
    address = next((a for a in addresses if a.get("invoice")), addresses[0] if addresses else None)
    country = ((address or {}).get("country.") or {}).get("code")
    if country:
        fields["country"] = country
    for name in ("street", "city", "postal_code"):  # the lines of a street joined
        value = " ".join(str((address or {}).get(name) or "").split())
        if value:
            fields[name] = value
    return Fact(
        domain=CUSTOMERS,
        key=str(party["code"]),
        system=system,
        external_id=str(party["id"]),
        fields=fields,
        modified_at=_latest([party, *identifiers, *addresses]),
    )


def _project(row: dict[str, Any], system: str, today: date) -> Fact:
    key: str = row["key"]
    milestone_prefix = f"{key}:milestone:"
    tasks, milestones = [], 0
    for child in row.get("children.") or []:
        child_key = _work_key(child.get("comment"))
        if child_key is not None and child_key.startswith(milestone_prefix):
            milestones += 1
        elif child.get("type") == "task":
            tasks.append(child)
    in_force: dict[str, tuple[date, Decimal]] = {}
    for task in tasks:
        role, since = role_of(_task_name(task, key))
        start = since or date.min
        if start <= today and (role not in in_force or start >= in_force[role][0]):
            in_force[role] = (start, task.get("list_price") or Decimal(0))
    progress = (row.get("status.") or {}).get("progress")
    method = row.get("project_invoice_method")
    billing = (
        "time_and_materials"
        if method == "timesheet"
        else ("fixed_fee" if milestones else "retainer")
    )
    return Fact(
        domain=PROJECTS,
        key=key,
        system=system,
        external_id=str(row["id"]),
        fields={
            "status": "closed" if progress is not None and progress >= 1 else "open",
            "rates": {role: rate for role, (_, rate) in sorted(in_force.items())},
            "billing_method": billing,
        },
        modified_at=_latest([row, *tasks]),
    )


def _line(row: dict[str, Any], system: str) -> Fact | None:
    """A timesheet line's fact; ``None`` when its description does not end with a marker."""
    description = (row.get("description") or "").rstrip()
    start = description.rfind(_MARK_OPEN)
    if start < 0 or not description.endswith("]"):
        return None
    key = description[start + len(_MARK_OPEN) : -1]
    if not key:
        return None
    work = (row.get("work.") or {}).get("origin.") or {}
    if work.get("type") == "task":
        project_key = _work_key((work.get("parent.") or {}).get("comment"))
    else:
        project_key = _work_key(work.get("comment"))
    fields: dict[str, Any] = {}
    if project_key is not None:
        fields["project_key"] = project_key
    if work.get("type") == "task":
        fields["task"] = role_of(_task_name(work, project_key))[0]
    fields["date"] = row["date"].isoformat()
    fields["hours"] = hours_of(row.get("duration"))
    invoice = (row.get("invoice_line.") or {}).get("invoice.") or {}
    billed = invoice.get("state") not in (None, "cancelled")
    fields["invoice_reference"] = invoice.get("reference") if billed else None
    return Fact(
        domain=TIME,
        key=key,
        system=system,
        external_id=str(row["id"]),
        fields=fields,
        modified_at=_latest([row]),
    )


def _invoice(invoice: InvoiceState, system: str) -> Fact:
    reference = str(invoice.reference)
    return Fact(
        domain=INVOICES,
        key=reference,
        system=system,
        external_id=str(invoice.id),
        fields={
            "project_key": _invoice_project(reference),
            "currency": invoice.currency,
            "state": invoice.state,
            "number": invoice.number,
            "total": invoice.total_amount,
            "outstanding": invoice.amount_to_pay,
            "invoice_date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
            "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
            "credited_reference": invoice.credited_reference,
        },
        modified_at=invoice.write_date,
        object=INVOICE_OBJECT,  # the change feed's: a posted or paid invoice is polled
    )


def _invoice_project(reference: str | None) -> str | None:
    """The project key of a hub invoice reference ``<project key>/...`` (``None`` for a
    reference of another form)."""
    project_key, separator, rest = (reference or "").partition("/")
    if separator and rest and split_engagement_code(project_key) is not None:
        return project_key
    return None


def _work_key(comment: str | None) -> str | None:
    """The key of a work whose ``comment`` is the hub's ``closeloop:<key>`` (the whole
    comment, as :meth:`~.projects.ProjectOperations.find_works` matches it)."""
    if not comment or not comment.startswith(_KEY_PREFIX) or "\n" in comment.strip():
        return None
    return comment.strip()[len(_KEY_PREFIX) :] or None


def _task_name(task: dict[str, Any], project_key: str | None) -> str:
    """A task's name as the hub keyed it (``<project key>:<name>``), else its name."""
    key = _work_key(task.get("comment"))
    prefix = f"{project_key}:"
    if key is not None and project_key is not None and key.startswith(prefix):
        return key[len(prefix) :]
    return str(task.get("name") or "")


def _alphanumeric(code: str | None) -> str:
    return re.sub(r"[^0-9A-Z]", "", (code or "").upper())


def _latest(rows: Sequence[dict[str, Any]]) -> datetime | None:
    """The latest write (or creation, for a row never written) of ``rows`` (aware UTC)."""
    moments = [m for r in rows if (m := r.get("write_date") or r.get("create_date"))]
    return max(moments, default=None)
