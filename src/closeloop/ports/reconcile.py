"""What a connector offers reconciliation: its records of each domain, read in bulk.

Reconciliation (:mod:`closeloop.reconcile`) compares what each system holds, domain by
domain, through the keys the hub makes visible in every system and the cross-reference. A
connector that can be reconciled implements :class:`FactSource`: for each domain it plays a
part in, it reads every record that concerns the hub, in pages (the vendor's paging, within
its rate limits: never one call per record), as :class:`Fact` values whose fields use the
canonical names and types below, so that facts of different vendors compare directly.

Domains, their keys and fields (a field a system does not keep is left out, and only fields
present on both sides are compared):

``customers``
    ``key``: the record's own id in its system (a CRM account id, an ERP customer code);
    pairs are found through the cross-reference (canonical type ``account``).
    Fields: ``legal_name`` (str), ``tax_ids`` (sorted tuple of upper-case alphanumerics,
    e.g. ``("DE123456789",)``), ``country`` (ISO 3166-1 alpha-2), ``currency`` (ISO 4217),
    ``payment_terms_days`` (int).
``projects``
    ``key``: the project key (:func:`closeloop.domain.keys.engagement_code`, e.g.
    ``SF-006...``); only projects whose code has the form of one.
    Fields: ``status`` (``"open"`` or ``"closed"``), ``rates`` (dict task name -> Decimal,
    the rate in force today), ``fee`` (Decimal, fixed-fee projects), ``billing_method``.
``time``
    ``key``: the time entry's key as the ERP's line carries it, ``<PSA system>-<entry id>``.
    Fields: ``project_key`` (str), ``task`` (str), ``date`` (ISO date str), ``hours``
    (Decimal, two places); the PSA adds ``approved``, ``billable``, ``billed`` (bools), the
    ERP ``invoice_reference`` (str or ``None``: not invoiced).
``invoices``
    The ERP: one fact per invoice and credit note, ``key`` its reference
    (``<project key>/<period>``, ``.../credit-<n>``). Fields: ``project_key``, ``currency``,
    ``state`` (``draft``, ``posted``, ``paid``, ``cancelled``), ``number``, ``total``,
    ``outstanding`` (Decimal), ``invoice_date``, ``due_date`` (ISO date str or ``None``),
    ``credited_reference`` (str or ``None``).
    The CRM: one fact per deal that carries the write-back, ``key`` its project key.
    Fields: ``invoiced``, ``paid``, ``outstanding``, ``overdue`` (Decimal),
    ``last_invoice_number`` (str or ``None``), ``payment_status`` (str).

``charges``
    Expenses and milestones, as their owners hold them and as the ERP billed them.
    The ERP: one fact per invoice or credit-note line whose note is the hub's
    ``closeloop:<charge key>``, ``key`` ``<charge key>@<line id>`` (a charge may have
    several lines: its invoice's and a credit note's), ``external_id`` the line id. Fields:
    ``charge`` (the charge key, without a milestone's attempt suffix: ``milestone:<project
    key>:<milestone id>``), ``kind`` (``expense``, ``milestone``, ``retainer``,
    ``overage``), ``project_key``, ``amount`` (Decimal, the line's untaxed amount, negative
    on a credit note), ``invoice_reference``, ``state`` (its invoice's).
    The PSA: one fact per expense on a project of the hub's form, ``key``
    ``expense:<project key>:<PSA system>-<expense id>`` (the hub's charge key). Fields:
    ``kind`` (``expense``), ``project_key``, ``amount`` (Decimal, the expense's total
    cost), ``date``, ``approved``, ``billable``, ``billed`` (bools).
    The CRM: one fact per milestone of a deal's plan, ``key`` ``milestone:<project
    key>:<milestone id>``. Fields: ``kind`` (``milestone``), ``project_key``, ``name``,
    ``status`` (``planned``, ``accepted``, ``disputed``), ``amount`` (Decimal: its amount,
    or its share of the deal's fee as the hub computes it).

A fact's ``modified_at`` is the vendor's last modification time (aware), when it keeps one:
it explains who changed a record last.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

CUSTOMERS = "customers"
PROJECTS = "projects"
TIME = "time"
INVOICES = "invoices"
CHARGES = "charges"
DOMAINS = (CUSTOMERS, PROJECTS, TIME, INVOICES, CHARGES)
"""Every domain reconciliation knows, in the order a run goes through them."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One record of one system as reconciliation compares it (module docstring).

    ``system``: the configured system name; ``external_id``: the record's id in it (shown
    to people, and to the repair); ``fields``: canonical names and types of its domain;
    ``object``: the vendor object the record is in the connector's change feed (``None``
    when it is not one), so that a change the hub has not read yet is told from drift.
    """

    domain: str
    key: str
    system: str
    external_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    modified_at: datetime | None = None
    object: str | None = None


@runtime_checkable
class FactSource(Protocol):
    """A connector whose records can be reconciled."""

    def fact_domains(self) -> Sequence[str]:
        """The domains (of :data:`DOMAINS`) this system holds records of."""
        ...

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        """Pages of every record of ``domain`` that concerns the hub (module docstring).

        Raises ``ValueError`` for a domain not in :meth:`fact_domains` and
        :class:`~closeloop.ports.connector.TransientError` when the system cannot answer now.
        """
        ...
