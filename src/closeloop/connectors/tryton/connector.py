"""The Tryton connector as the engine sees it: commands in batches, lookups by idempotency
key, and a change feed of customer invoices (posted, paid) by write date.

Idempotency keys have the form ``tryton:<operation>:<key>``, ``<key>`` being the key the
operation makes visible in Tryton (see :mod:`.operations`), so that :meth:`find` can look
an earlier write up from the key alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any

from closeloop.connectors.tryton.invoicing import InvoiceState
from closeloop.connectors.tryton.operations import (
    LINE_MARK,
    TaskSpec,
    TimesheetEntry,
    TrytonOperations,
)
from closeloop.connectors.tryton.rpc import TrytonError
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, ExceptionClass, Outcome, Permanent
from closeloop.mdm.matching import Party, match_customer
from closeloop.ports.connector import ConnectorLimits

SYSTEM = "tryton"
INVOICES = "account.invoice"
PAGE = 500


def idempotency_key(operation: str, key: str) -> str:
    """``tryton:<operation>:<key>``."""
    return f"{SYSTEM}:{operation}:{key}"


def _split(idempotency_key: str) -> tuple[str, str]:
    _, operation, key = idempotency_key.split(":", 2)
    return operation, key


def invoice_payload(invoice: InvoiceState) -> dict[str, Any]:
    """An invoice as a change payload (JSON)."""
    return {
        "id": invoice.id,
        "reference": invoice.reference,
        "number": invoice.number,
        "state": invoice.state,
        "party_code": invoice.party_code,
        "currency": invoice.currency,
        "invoice_date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
        "untaxed_amount": str(invoice.untaxed_amount),
        "tax_amount": str(invoice.tax_amount),
        "total_amount": str(invoice.total_amount),
        "amount_to_pay": str(invoice.amount_to_pay),
        "amount_paid": str(
            invoice.total_amount - invoice.amount_to_pay
            if invoice.state in ("posted", "paid")
            else Decimal(0)
        ),
    }


class TrytonConnector:
    """Runs closeloop's commands in Tryton through :class:`TrytonOperations`.

    One writer at a time (``max_concurrent=1``): Tryton on SQLite loses concurrent creates
    to sequence races (tryton.md, gotcha 7). Timesheet lines go in bulk: consecutive
    ``add_timesheet_line`` commands of a batch become one ``create`` call.
    """

    def __init__(self, operations: TrytonOperations, *, batch_size: int = 1000) -> None:
        self.operations = operations
        self._limits = ConnectorLimits(
            batch_size=batch_size,
            requests_per_window=50,
            window_s=1.0,
            max_concurrent=1,
            call_timeout_s=120,
        )

    @property
    def system(self) -> str:
        """``"tryton"``."""
        return SYSTEM

    def close(self) -> None:
        """Close the RPC session's connections."""
        self.operations.rpc.close()

    @property
    def limits(self) -> ConnectorLimits:
        """One writer, batches of up to 1,000 commands."""
        return self._limits

    def objects(self) -> Sequence[str]:
        """The change feed: customer invoices."""
        return (INVOICES,)

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Customer invoices written at or after ``since``, by (write date, id), keyset-paged."""
        if object_name != INVOICES:
            raise ValueError(f"Tryton's change feed has no {object_name!r}")
        after: tuple[datetime, int] | None = None
        while True:
            domain: list[Any] = [["write_date", ">=", since]] if since else []
            if after is not None:
                moment, last = after
                domain.append(
                    [
                        "OR",
                        ["write_date", ">", moment],
                        [["write_date", "=", moment], ["id", ">", last]],
                    ]
                )
            page = self.operations.read_invoices(
                domain, limit=PAGE, order=[["write_date", "ASC"], ["id", "ASC"]]
            )
            if page:
                yield [
                    Change(
                        system=SYSTEM,
                        object=INVOICES,
                        external_id=str(i.id),
                        version=i.write_date.isoformat(),
                        modified_at=i.write_date,
                        payload=invoice_payload(i),
                    )
                    for i in page
                ]
            if len(page) < PAGE:
                return
            after = (page[-1].write_date, page[-1].id)

    # --- commands ---------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands`` in order; runs of timesheet lines as one bulk call."""
        outcomes: list[Outcome] = []
        for operation, group in groupby(commands, key=lambda c: c.operation):
            batch = list(group)
            if operation == "add_timesheet_line":
                outcomes.extend(self._timesheet(batch))
            else:
                outcomes.extend(self._one(c) for c in batch)
        return outcomes

    def _one(self, command: Command) -> Outcome:
        handler = self._handlers().get(command.operation)
        if handler is None:
            return Permanent(ExceptionClass.VALIDATION, f"unknown operation {command.operation!r}")
        return _guard(lambda: handler(command.payload))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        ops = self.operations
        return {
            "upsert_customer": lambda p: {
                "party": ops.upsert_customer(
                    p["code"],
                    p["name"],
                    p["country"],
                    [tuple(t) for t in p.get("tax_ids", [])],
                    p.get("address"),
                    p.get("email"),
                )
            },
            "upsert_project": lambda p: {
                "works": ops.upsert_project(
                    p["key"],
                    p["name"],
                    p["customer_code"],
                    [TaskSpec(t["key"], t["name"], Decimal(t["list_price"])) for t in p["tasks"]],
                    Decimal(p["list_price"]),
                    p.get("invoice_method", "timesheet"),
                )
            },
            "close_project": lambda p: {"closed": ops.close_project(p["key"])},
            "match_customer": self._match_customer,
            "invoice_project": lambda p: _invoice(
                ops.invoice_project(
                    p["project_key"],
                    date.fromisoformat(p["up_to"]),
                    p["reference"],
                    date.fromisoformat(p["invoice_date"]) if p.get("invoice_date") else None,
                )
            ),
            "post_invoice": lambda p: _invoice(
                ops.post_invoices([p["reference"]]).get(p["reference"])
            ),
            "record_payment": lambda p: {
                "recorded": ops.record_payment(
                    p["reference"], p["key"], Decimal(p["amount"]), date.fromisoformat(p["date"])
                )
            },
        }

    def _match_customer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Which ERP customer the account is (:func:`closeloop.mdm.matching.match_customer`):
        ``{"kind", "party_code", "party_id", "score", "explain", "candidates"}``. Reads only."""
        account = Party(
            id="deal",
            name=str(payload["name"]),
            country=str(payload.get("country") or ""),
            tax_ids=tuple(str(t) for t in payload.get("tax_ids") or ()),
            street=str(payload.get("street") or ""),
            city=str(payload.get("city") or ""),
            postal_code=str(payload.get("postal_code") or ""),
        )
        candidates = self.operations.customer_candidates(
            account.tax_ids, account.name, account.country
        )
        result = match_customer(account, candidates, float(payload.get("threshold", 85.0)))
        found = result.match
        party_ids = self.operations.find_customers([found.id]) if found else {}
        return {
            "kind": result.kind,
            "party_code": found.id if found else None,
            "party_id": party_ids.get(found.id) if found else None,
            "score": result.score,
            "explain": result.explain(),
            "candidates": [[p.id, p.name, round(s, 1)] for p, s in result.candidates],
        }

    def _timesheet(self, commands: list[Command]) -> list[Outcome]:
        try:
            entries = [_entry(c.payload) for c in commands]
            ids = self.operations.add_timesheet_lines(entries)
        except (TrytonError, LookupError, ValueError) as exc:
            if len(commands) == 1:
                return [_refusal(exc)]
            # one bad line refuses the whole bulk create: find it, line by line
            return [o for c in commands for o in self._timesheet([c])]
        return [Applied({"line": ids[e.key]}) for e in entries]

    # --- lookups ----------------------------------------------------------------------------
    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """Earlier writes for ``tryton:<operation>:<key>`` keys, one lookup per operation."""
        by_operation: dict[str, list[str]] = {}
        for full in idempotency_keys:
            operation, key = _split(full)
            by_operation.setdefault(operation, []).append(key)
        ops, found = self.operations, {}
        for operation, keys in by_operation.items():
            hits: dict[str, dict[str, Any]]
            if operation == "upsert_customer":  # key: <code> or <code>:<requester>
                codes = {k: k.split(":", 1)[0] for k in keys}
                parties = ops.find_customers(sorted(set(codes.values())))
                hits = {k: {"party": parties[c]} for k, c in codes.items() if c in parties}
            elif operation in ("upsert_project", "close_project"):
                hits = {k: {"works": {k: v["id"]}} for k, v in ops.find_works(keys).items()}
            elif operation == "add_timesheet_line":
                hits = {k: {"line": v} for k, v in self._find_lines(keys).items()}
            elif operation in ("invoice_project", "post_invoice"):
                invoices = ops.find_invoices(keys)
                hits = {
                    k: _invoice(v)
                    for k, v in invoices.items()
                    if operation == "invoice_project" or v.state != "draft"
                }
            else:  # record_payment: no lookup by key alone; the operation itself is idempotent
                hits = {}
            found.update({idempotency_key(operation, k): Applied(v) for k, v in hits.items()})
        return found

    def _find_lines(self, keys: list[str]) -> dict[str, int]:
        domain: list[Any] = [
            "OR",
            *[["description", "like", f"%{LINE_MARK.format(key=k)}"] for k in keys],
        ]
        rows = self.operations.rpc.search_read("timesheet.line", [domain], ["description"])
        found = {}
        for row in rows:
            for key in keys:
                if (row["description"] or "").endswith(LINE_MARK.format(key=key)):
                    found[key] = row["id"]
        return found


def _entry(payload: dict[str, Any]) -> TimesheetEntry:
    return TimesheetEntry(
        key=payload["key"],
        employee_key=payload["employee_key"],
        employee_name=payload["employee_name"],
        task_key=payload["task_key"],
        date=date.fromisoformat(payload["date"]),
        hours=Decimal(payload["hours"]),
        description=payload.get("description", ""),
    )


def _invoice(invoice: InvoiceState | None) -> dict[str, Any]:
    return invoice_payload(invoice) if invoice else {"invoice": None}


def _guard(action: Callable[[], dict[str, Any]]) -> Outcome:
    """Run one operation; Tryton's refusals and unknown references become permanent outcomes
    (transport failures propagate: the engine retries or looks up)."""
    try:
        return Applied(action())
    except (TrytonError, LookupError, ValueError) as exc:
        return _refusal(exc)


def _refusal(exc: Exception) -> Permanent:
    """The permanent outcome of a refused operation: Tryton's class for its refusals, not
    found for unknown references, validation for a malformed command."""
    if isinstance(exc, TrytonError):
        detail = f" ({exc.description})" if exc.description else ""
        return Permanent(exc.error_class, exc.message + detail)
    if isinstance(exc, (KeyError, ValueError)):  # KeyError first: it is a LookupError too
        return Permanent(ExceptionClass.VALIDATION, f"malformed command: missing or bad {exc}")
    return Permanent(ExceptionClass.NOT_FOUND, str(exc.args[0]))
