"""Credit notes in Tryton: a posted customer invoice credited, in whole or by line, with
Tryton's ``account.invoice.credit`` wizard (without refund: the invoice stays posted and the
credit note is a document of its own, its lines' ``origin`` the lines they credit).

The credit note's key is its ``reference`` (the hub's credit reference), written with the
reason right after the wizard made the draft; an unreferenced draft credit note of the
invoice (an earlier attempt's, whose answer was lost) is taken instead of crediting again.
Lines are chosen by key: a charge line by its charge key (:mod:`.charges`), ``time`` for
every line billing recorded time (Tryton's project invoicing: the lines timesheet lines
point to); the lines not chosen are deleted from the draft, the charge lines kept get the
note of the line they credit (so that the charge can be billed anew), then it is posted.
Lines already credited by another credit note that is not cancelled are never credited
again.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from closeloop.connectors.tryton.invoice_reads import InvoiceReading, InvoiceState
from closeloop.connectors.tryton.keys import CHARGE_NOTE, charge_key_of
from closeloop.connectors.tryton.rpc import TrytonError, TrytonUserError, after_write
from closeloop.domain.commands import ExceptionClass

TIME_KEY = "time"
"""The line key that names every line of recorded time."""

_FIELDS = [
    "reference",
    "number",
    "state",
    "comment",
    "total_amount",
    "sequence_type_cache",
    "origin_invoices.reference",
    "lines.type",
    "lines.note",
    "lines.project_invoice_timesheet_duration",
    "lines.origin",
]


@dataclass(frozen=True)
class CreditRequest:
    """Credit the posted invoice ``reference`` with a credit note referenced
    ``credit_reference``, dated ``credit_date`` (default today), carrying ``reason``: the
    whole invoice when ``line_keys`` is empty, else its lines of those keys (charge keys,
    :data:`TIME_KEY`)."""

    reference: str
    credit_reference: str
    reason: str
    line_keys: tuple[str, ...] = ()
    credit_date: date | None = None


class CreditRefusedError(TrytonError):
    """A credit the hub refuses before anything is made in Tryton: the invoice is not posted
    or paid, is itself a credit note, or does not bill (or no longer bills) a line key."""

    error_class = ExceptionClass.VALIDATION


class CreditOperations(InvoiceReading):
    """The credit part of :class:`~.operations.TrytonOperations` (a mixin: it needs ``rpc``
    and ``ids``)."""

    def credit_invoice(self, request: CreditRequest) -> InvoiceState:
        """Credit ``request.reference`` (see the module docstring); the posted credit note.
        Idempotent by ``credit_reference``: a credit note already carrying it is returned
        (posted first if still a draft). Eight calls: the invoice with its credit notes;
        the wizard (three); the credit note's lines; reference, reason and lines written
        together; the post; the credit note read. Two for a replay of a posted one.

        Raises ``LookupError`` for an unknown invoice; :class:`CreditRefusedError`, creating
        nothing, for an invoice that is not posted or paid, a credit note, a key the invoice
        does not bill or whose lines are already credited, a credit reference already used
        for another invoice; and Tryton's refusals (:class:`~.rpc.TrytonError`, a closed
        period say) of the wizard, the write or the post.
        """
        rows = self.rpc.search_read(
            "account.invoice",
            [
                ["type", "=", "out"],
                ["company", "=", self.ids.company],
                ["state", "!=", "cancelled"],
                [
                    "OR",
                    [["reference", "in", [request.reference, request.credit_reference]]],
                    [["origin_invoices.reference", "=", request.reference]],
                ],
            ],
            _FIELDS,
        )
        credits = [r for r in rows if _credited(r)]
        done = [r for r in rows if r["reference"] == request.credit_reference]
        if done:
            return self._finish(done[0], request)
        originals = sorted(
            (r for r in rows if r["reference"] == request.reference),
            key=lambda r: bool(_credited(r)),  # an invoice before a credit note
        )
        if not originals:
            raise LookupError(f"invoice {request.reference} does not exist in Tryton")
        original = originals[0]
        _refuse_state(original, request)
        mine = [
            c
            for c in credits
            if request.reference in _credited(c) and not c["reference"] and c["state"] == "draft"
        ]
        adopted = max((c["id"] for c in mine), default=None)
        taken = {
            _line_id(line["origin"])
            for c in credits
            if c["id"] != adopted
            for line in c.get("lines.") or []
        }
        selected = _select(original, request, taken)
        credit = adopted if adopted is not None else self._run_wizard(original, request)
        with after_write(refusals=(TrytonUserError,)) if adopted is None else nullcontext():
            lines = self.rpc.search_read(
                "account.invoice.line", [["invoice", "=", credit]], ["origin", "type"]
            )
            self.rpc.write(
                "account.invoice", [credit], _credit_values(original, request, lines, selected)
            )
            self.rpc.call("account.invoice", "post", [credit])
            (state,) = self.read_invoices([["id", "=", credit]])
            return state

    def _run_wizard(self, original: dict[str, Any], request: CreditRequest) -> int:
        """Tryton's credit wizard on ``original``, without refund: the draft credit note's id
        (three calls)."""
        on = request.credit_date or datetime.now(UTC).date()
        answers = self.rpc.run_wizard(
            "account.invoice.credit",
            [("credit", {"start": {"with_refund": False, "invoice_date": on}})],
            active_model="account.invoice",
            active_ids=[original["id"]],
        )
        for action in (answers[0] or {}).get("actions") or []:
            if isinstance(action, list) and len(action) == 2 and action[1].get("res_id"):
                return int(action[1]["res_id"][0])
        raise TrytonError(f"Tryton's credit wizard made no credit note of {request.reference}")

    def _finish(self, credit: dict[str, Any], request: CreditRequest) -> InvoiceState:
        """The credit note already referenced ``request.credit_reference``: posted if still
        a draft, and read."""
        if request.reference not in _credited(credit):
            raise CreditRefusedError(
                f"credit reference {request.credit_reference} is already used by invoice "
                f"{credit['number'] or credit['id']}, which does not credit "
                f"{request.reference}: choose another credit reference"
            )
        if credit["state"] == "draft":
            self.rpc.call("account.invoice", "post", [credit["id"]])
        with after_write() if credit["state"] == "draft" else nullcontext():
            (state,) = self.read_invoices([["id", "=", credit["id"]]])
            return state


def _credited(row: dict[str, Any]) -> list[str]:
    """The references of the invoices an invoice row credits (none: not a credit note)."""
    return [str(o.get("reference") or "") for o in row.get("origin_invoices.") or []]


def _line_id(origin: str | None) -> int | None:
    """The invoice line id of a line's ``origin`` (``account.invoice.line,<id>``)."""
    if origin and origin.startswith("account.invoice.line,"):
        return int(origin.split(",", 1)[1])
    return None


def _line_key(line: dict[str, Any]) -> str | None:
    """The key a credit can name an invoice line by: its charge key, :data:`TIME_KEY` for a
    line of recorded time, ``None`` for another line."""
    key = charge_key_of(line.get("note"))
    if key is not None:
        return key
    return TIME_KEY if line.get("project_invoice_timesheet_duration") is not None else None


def _refuse_state(original: dict[str, Any], request: CreditRequest) -> None:
    if original["state"] not in ("posted", "paid"):
        raise CreditRefusedError(
            f"invoice {request.reference} is {original['state']}, not posted or paid: only a "
            "posted invoice is credited (a draft is changed or deleted instead)"
        )
    if (
        _credited(original)
        or original["sequence_type_cache"] == "credit_note"
        or original["total_amount"] < 0
    ):
        raise CreditRefusedError(
            f"invoice {request.reference} is itself a credit note: it cannot be credited"
        )


def _select(original: dict[str, Any], request: CreditRequest, taken: set[int | None]) -> set[int]:
    """The ids of ``original``'s lines to credit: those of ``request.line_keys`` (all when
    empty) not credited yet (``taken``). Raises :class:`CreditRefusedError` for a key the
    invoice does not bill, a key whose lines are all credited, or nothing left to credit."""
    lines = [line for line in original.get("lines.") or [] if line.get("type") == "line"]
    keys = {line["id"]: _line_key(line) for line in lines}
    if request.line_keys:
        unknown = [k for k in request.line_keys if k not in keys.values()]
        if unknown:
            billed = sorted({k for k in keys.values() if k})
            raise CreditRefusedError(
                f"invoice {request.reference} does not bill {', '.join(unknown)} (its line "
                f"keys: {', '.join(billed) or 'none'}): nothing was credited"
            )
        wanted = {i for i, k in keys.items() if k in request.line_keys}
        spent = [k for k in request.line_keys if {i for i in wanted if keys[i] == k} <= taken]
        if spent:
            raise CreditRefusedError(
                f"the lines {', '.join(spent)} of invoice {request.reference} are already "
                "credited by another credit note: nothing was credited"
            )
    else:
        wanted = set(keys)
    selected = wanted - taken
    if not selected:
        raise CreditRefusedError(
            f"invoice {request.reference} is already credited in full: nothing was credited"
        )
    return selected


def _credit_values(
    original: dict[str, Any],
    request: CreditRequest,
    lines: Sequence[dict[str, Any]],
    selected: set[int],
) -> dict[str, Any]:
    """What is written on the draft credit note: its reference, the reason (description)
    with the credited invoice named in the comment (after the original's mention), the
    lines not selected deleted, the kept charge lines' notes."""
    notes = {line["id"]: line.get("note") for line in original.get("lines.") or []}
    drop = [c["id"] for c in lines if c["type"] == "line" and _line_id(c["origin"]) not in selected]
    actions: list[Any] = [["delete", drop]] if drop else []
    for line in lines:
        origin = _line_id(line["origin"])
        key = charge_key_of(notes.get(origin)) if origin in selected else None
        if key is not None:
            actions.append(["write", [line["id"]], {"note": CHARGE_NOTE.format(key=key)}])
    credited = f"Credits invoice {original['number']} (reference {request.reference})."
    values: dict[str, Any] = {
        "reference": request.credit_reference,
        "description": request.reason,
        "comment": "\n".join(p for p in (original.get("comment"), credited) if p),
    }
    if actions:
        values["lines"] = actions
    return values
