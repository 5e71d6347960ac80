"""The Xero connector as the engine sees it: the ``erp`` role's operations in batches, lookups
by idempotency key, and a change feed of customer invoices and credit notes.

Each operation's commands of a batch go together, in a few calls (:mod:`.customers`,
:mod:`.projects`, :mod:`.worklog`, :mod:`.invoicing`); a record Xero refuses fails alone
(``summarizeErrors=false``), as a business exception with Xero's message. Idempotency keys
are ``<system>:<operation>:<key>``, the key being what the operation makes visible in Xero
(:mod:`.marks`), so :meth:`XeroConnector.find` looks an earlier write up from the key alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from closeloop.connectors.bulk import (
    isolate,
    malformed,
    parse_each,
    run_groups,
    transport_outcome,
)
from closeloop.connectors.xero import facts
from closeloop.connectors.xero.client import (
    PAGE_SIZE,
    XeroApiError,
    XeroClient,
    parse_msdate,
)
from closeloop.connectors.xero.credits import Credits
from closeloop.connectors.xero.customers import Customers
from closeloop.connectors.xero.invoicing import Invoicing, document_payload, made_payload
from closeloop.connectors.xero.marks import project_of_wip
from closeloop.connectors.xero.projects import Accounts, Projects
from closeloop.connectors.xero.worklog import Worklog, find_lines
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, ExceptionClass, Outcome, Permanent
from closeloop.domain.operations import (
    AddTimesheetLine,
    CloseProject,
    CreditInvoice,
    InvoiceProject,
    MatchCustomer,
    PostInvoice,
    UpsertCustomer,
    UpsertProject,
    split_idempotency_key,
)
from closeloop.ports.connector import AmbiguousError, ConnectorLimits, RefusedError, TransientError
from closeloop.ports.reconcile import Fact

T = TypeVar("T")
INVOICES = "Invoices"
CREDIT_NOTES = "CreditNotes"
OBJECTS = (INVOICES, CREDIT_NOTES)
_FEED_TYPE = {INVOICES: "ACCREC", CREDIT_NOTES: "ACCRECCREDIT"}


def feed_payload(record: dict[str, Any]) -> dict[str, Any]:
    """A document of the change feed as Xero answered it, plus ``CreditedReference`` for a
    credit note: the reference of the invoice it credits (the hub references credit notes
    ``<invoice reference>/credit-<n>``; else the invoice of its first allocation)."""
    credited = None
    if str(record.get("Type")) == "ACCRECCREDIT":
        reference = str(record.get("Reference") or "")
        if "/credit-" in reference:
            credited = reference.rsplit("/credit-", 1)[0]
        else:
            first = (record.get("Allocations") or [{}])[0].get("Invoice") or {}
            credited = first.get("Reference") or first.get("InvoiceNumber")
    return {**record, "CreditedReference": credited}


class XeroConnector:
    """Runs closeloop's commands in one Xero organisation.

    ``batch_size`` defaults to 50 (Xero's advice for batch writes); at most
    ``max_concurrent`` calls at once (Xero allows 5 per tenant).
    """

    def __init__(
        self,
        client: XeroClient,
        accounts: Accounts,
        *,
        system: str = "xero",
        batch_size: int = 50,
        max_concurrent: int = 2,
        call_timeout_s: float = 30.0,
    ) -> None:
        self.client = client
        self.projects = Projects(client, accounts)
        self.customers = Customers(client)
        self.worklog = Worklog(client, self.projects)
        self.invoicing = Invoicing(client, self.projects)
        self.credits = Credits(client, self.invoicing)
        self._system = system
        minute, window_s = client.windows[0]
        self._limits = ConnectorLimits(
            batch_size=batch_size,
            requests_per_window=minute,
            window_s=window_s,
            max_concurrent=max_concurrent,
            call_timeout_s=call_timeout_s * 4,
        )

    @property
    def system(self) -> str:
        """The configured system name (default ``"xero"``)."""
        return self._system

    @property
    def limits(self) -> ConnectorLimits:
        """Batches of 50, Xero's minute limit, few calls at once."""
        return self._limits

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # --- change feed -------------------------------------------------------------------------
    def objects(self) -> Sequence[str]:
        """Customer invoices and credit notes."""
        return OBJECTS

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Customer invoices (or credit notes) changed at or after ``since``, 1,000 a call
        in ``UpdatedDateUTC`` order; the hub's work-in-progress drafts are not invoices and
        are left out.

        Paged by key, not by page number: after a full page the next call asks
        ``If-Modified-Since`` the page's last change, so a document changed while the
        pages are read (it moves to the end) cannot push another past a page's edge
        unread. Versions read twice at the seam are given once. A full page of one instant
        (more than 1,000 documents changed in one millisecond) goes on by page number."""
        if object_name not in OBJECTS:
            raise ValueError(f"Xero's change feed has no {object_name!r}")
        params = {"where": f'Type=="{_FEED_TYPE[object_name]}"', "order": "UpdatedDateUTC ASC"}
        cursor, number, seen = since, 1, set[tuple[str, str]]()
        while True:
            answer = self.client.request(
                "GET",
                object_name,
                params={**params, "page": number, "pageSize": PAGE_SIZE},
                modified_since=cursor,
            )
            rows = list(answer.get(object_name) or [])
            changes = [
                c
                for c in self._changes(object_name, rows)
                if (c.external_id, c.version) not in seen
                and (since is None or (c.modified_at is not None and c.modified_at >= since))
            ]
            seen |= {(c.external_id, c.version) for c in changes}
            if changes:
                yield changes
            if len(rows) < PAGE_SIZE:
                return
            last = max(filter(None, (parse_msdate(r.get("UpdatedDateUTC")) for r in rows)))
            if cursor is not None and last <= cursor:
                number += 1
            else:
                cursor, number = last, 1

    def read_records(self, object_name: str, ids: Sequence[str]) -> Sequence[Change]:
        """The records ``ids`` of ``object_name`` (``Invoices``, ``CreditNotes``) as changes
        of the feed, in one call per 1,000 invoices or 25 credit notes (a webhook's
        notification read back); ids
        the organisation lacks, and records the feed leaves out, are absent."""
        if object_name not in OBJECTS:
            raise ValueError(f"Xero's change feed has no {object_name!r}")
        wanted = sorted(set(ids))
        rows: list[dict[str, Any]] = []
        if object_name == INVOICES:
            for start in range(0, len(wanted), 1000):
                chunk = ",".join(wanted[start : start + 1000])
                rows += self.client.list_all(object_name, object_name, params={"IDs": chunk})
        else:  # Xero's credit notes take no IDs parameter: by where, 25 at a time
            clauses = [f'CreditNoteID==guid("{i}")' for i in wanted]
            rows += self.client.where_in(object_name, clauses)
        feed_type = _FEED_TYPE[object_name]
        return self._changes(object_name, [r for r in rows if r.get("Type") == feed_type])

    def _changes(self, object_name: str, records: Sequence[dict[str, Any]]) -> list[Change]:
        id_key = "InvoiceID" if object_name == INVOICES else "CreditNoteID"
        changes = []
        for record in records:
            if project_of_wip(record.get("Reference")) is not None:
                continue
            moment = parse_msdate(record.get("UpdatedDateUTC"))
            if moment is None:
                continue
            changes.append(
                Change(
                    system=self._system,
                    object=object_name,
                    external_id=str(record[id_key]),
                    version=moment.isoformat(),
                    modified_at=moment,
                    payload=feed_payload(record),
                )
            )
        return sorted(changes, key=lambda c: (c.modified_at, c.external_id))

    # --- reconciliation (closeloop.ports.reconcile.FactSource) ------------------------------
    def fact_domains(self) -> Sequence[str]:
        """Customers, projects, time, invoices and charges (:mod:`.facts`)."""
        return facts.DOMAINS

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        """Pages of every record of ``domain`` in this organisation, read 1,000 a call
        (:func:`.facts.read_facts`: what each domain holds). Raises ``ValueError`` for a
        domain not in :meth:`fact_domains`, :class:`TransientError` when Xero cannot
        answer now."""
        return facts.read_facts(
            self.client, self.projects.accounts.tracking_category, self._system, domain
        )

    # --- commands ----------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands``, each operation's together (see the module docstring)."""
        return run_groups(commands, self._run_group)

    def _run_group(self, operation: str, batch: list[Command]) -> list[Outcome]:
        ops: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[Any], list[Any]]]] = {
            "match_customer": (MatchCustomer.model_validate, self.customers.match),
            "upsert_customer": (UpsertCustomer.model_validate, self._upsert_customers),
            "upsert_project": (UpsertProject.model_validate, self._upsert_projects),
            "close_project": (CloseProject.model_validate, self._close_projects),
            "add_timesheet_line": (AddTimesheetLine.model_validate, self.worklog.add),
            "invoice_project": (InvoiceProject.model_validate, self.invoicing.invoice),
            "post_invoice": (PostInvoice.model_validate, self._post),
            "credit_invoice": (CreditInvoice.model_validate, self._credit),
        }
        if operation not in ops:
            refused = Permanent(ExceptionClass.VALIDATION, f"unknown operation {operation!r}")
            return [refused] * len(batch)
        parse, run = ops[operation]
        outcomes, items = parse_each(batch, parse)
        # a call Xero refuses as a whole is halved until the refused command stands alone
        results = isolate([item for _, item in items], run, _REFUSALS)
        for (position, _), result in zip(items, results, strict=True):
            outcomes[position] = _outcome(result)
        return [outcomes[i] for i in range(len(batch))]

    def _upsert_customers(self, customers: list[UpsertCustomer]) -> list[Any]:
        return [
            r if isinstance(r, Exception) else {"party": r}
            for r in self.customers.upsert(customers)
        ]

    def _upsert_projects(self, projects: list[UpsertProject]) -> list[Any]:
        codes = [str(p.customer_code) for p in projects if p.customer_code]
        contacts = {c: str(r["ContactID"]) for c, r in self.customers.by_code(codes).items()}
        return list(self.projects.upsert(projects, contacts))

    def _close_projects(self, closes: list[CloseProject]) -> list[Any]:
        return [
            {"closed": True}
            if self.projects.set_option_status(c.key, "ARCHIVED")
            else LookupError(f"no project {c.key!r} in Xero")
            for c in closes
        ]

    def _post(self, posts: list[PostInvoice]) -> list[Any]:
        return list(self.invoicing.post([p.reference for p in posts]))

    def _credit(self, credits: list[CreditInvoice]) -> list[Any]:
        results: list[Any] = []
        for credit in credits:
            try:
                results.append(self.credits.credit(credit))
            except _REFUSALS as exc:
                results.append(exc)
        return results

    # --- lookups -----------------------------------------------------------------------------
    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """Earlier writes for ``<system>:<operation>:<key>`` keys of this system, one lookup
        per operation."""
        asked: dict[str, dict[str, str]] = {}
        for full in idempotency_keys:
            try:
                system, operation, key = split_idempotency_key(full)
            except ValueError:
                continue
            if system == self._system:
                asked.setdefault(operation, {})[key] = full
        found: dict[str, Applied] = {}
        for operation, keys in asked.items():
            for key, result in self._find(operation, sorted(keys)).items():
                found[keys[key]] = Applied(result)
        return found

    def _find(self, operation: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        if operation == "upsert_customer":  # key: <code> or <code>:<requester>
            codes = {k: k.split(":", 1)[0] for k in keys}
            contacts = self.customers.by_code(sorted(set(codes.values())))
            return {
                k: {"party": contacts[c]["ContactID"]} for k, c in codes.items() if c in contacts
            }
        if operation in ("upsert_project", "close_project"):
            options = self.projects.options()
            anchors = self.projects.anchors(keys) if operation == "upsert_project" else {}
            hits = {}
            for key in keys:
                option = options.get(key)
                if option is None or (operation == "upsert_project" and key not in anchors):
                    continue
                if operation == "close_project" and option.get("Status") != "ARCHIVED":
                    continue
                option_id = str(option["TrackingOptionID"])
                hits[key] = {"project_id": option_id, "works": {key: option_id}}
            return hits
        if operation == "add_timesheet_line":
            return {k: {"line": v} for k, v in find_lines(self.client, keys).items()}
        if operation == "invoice_project":  # done once made and its drafts cleaned up
            invoices = self.invoicing.by_reference("Invoices", keys)
            unclean = self.invoicing.uncleaned([k.split("/", 1)[0] for k in invoices])
            return {
                k: made_payload(v) for k, v in invoices.items() if k.split("/", 1)[0] not in unclean
            }
        if operation == "post_invoice":
            invoices = self.invoicing.by_reference("Invoices", keys)
            return {
                k: document_payload(v)
                for k, v in invoices.items()
                if v["Status"] in ("AUTHORISED", "PAID")
            }
        if operation == "credit_invoice":  # key: the credit reference; done once allocated
            notes = {
                k: v
                for k, v in self.invoicing.by_reference("CreditNotes", keys).items()
                if not Decimal(str(v.get("RemainingCredit") or 0))
            }
            return {
                k: document_payload(v, feed_payload(v)["CreditedReference"])
                for k, v in notes.items()
            }
        return {}  # match_customer: reading again is harmless


_REFUSALS = (XeroApiError, RefusedError, LookupError, ValueError, TypeError)
"""What refuses one command: Xero's answer to it, a request that cannot be sent, an unknown
reference, a malformed command."""


def _outcome(result: Any) -> Outcome:
    """The outcome of one item's result."""
    if isinstance(result, (TransientError, AmbiguousError)):
        return transport_outcome(result)
    if isinstance(result, (XeroApiError, RefusedError)):
        return Permanent(ExceptionClass.VALIDATION, str(result))
    if isinstance(result, KeyError | ValueError | TypeError):
        return malformed(result)
    if isinstance(result, LookupError):
        return Permanent(ExceptionClass.NOT_FOUND, str(result.args[0]))
    return Applied(dict(result))
