"""What an invoice carries besides its lines: its currency (with the exchange rates Tryton
needs to post it), payment term, legal mention and the customer's VAT number.

Tryton's project invoicing makes every invoice in the company's currency with the party's
payment term (if any); :class:`~.invoicing.InvoicingOperations` then writes, in the same
call that sets the reference and date, the deal's currency on the invoice and its lines,
a "Net <N> days" payment term (made once), the ``comment`` with the mention and VAT number,
and the party's identifier of that number as ``party_tax_identifier``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from closeloop.connectors.tryton.charges import Charge
from closeloop.connectors.tryton.rpc import TrytonError, TrytonRPC
from closeloop.domain.commands import ExceptionClass

TERM_NAME = "Net {days} days"


@dataclass(frozen=True)
class InvoiceRequest:
    """Invoice project ``project_key``'s lines up to ``up_to`` as ``reference``, dated
    ``invoice_date`` (default ``up_to``), in ``currency`` (ISO 4217; ``None``: the
    company's), due ``payment_terms_days`` after its date (``None``: the party's term in
    Tryton, if any), with ``mention`` (a legal mention, e.g. reverse charge) and the
    customer's VAT number ``customer_tax_id`` in its comment; ``charges`` billed on it
    besides the time (:mod:`.charges`), the time only when ``include_time`` (and the project
    is invoiced on timesheets)."""

    project_key: str
    up_to: date
    reference: str
    invoice_date: date | None = None
    currency: str | None = None
    payment_terms_days: int | None = None
    mention: str = ""
    customer_tax_id: str | None = None
    charges: tuple[Charge, ...] = ()
    include_time: bool = True

    @property
    def dated(self) -> date:
        """The invoice date."""
        return self.invoice_date or self.up_to


class MissingRateError(TrytonError):
    """Tryton has no exchange rate to post an invoice in a foreign currency on its date:
    refused before anything is created; finance loads the rate and replays."""

    error_class = ExceptionClass.VALIDATION


def rate_refusals(
    requests: Sequence[InvoiceRequest], company_currency: str, entity: str, since: dict[str, date]
) -> dict[str, MissingRateError]:
    """The requests in a currency other than ``company_currency`` that Tryton could not post
    for want of a rate of that currency or of the company's on or before the invoice date,
    by reference; ``since``: the earliest rate date of each currency Tryton has."""
    refused: dict[str, MissingRateError] = {}
    for request in requests:
        if not request.currency or request.currency == company_currency:
            continue
        on = request.dated
        lacking = [
            c for c in (request.currency, company_currency) if c not in since or since[c] > on
        ]
        if lacking:
            refused[request.reference] = MissingRateError(
                f"no exchange rate for {' and '.join(lacking)} on or before {on.isoformat()} "
                f"in Tryton (company {entity} keeps its books in {company_currency}), so invoice "
                f"{request.reference} in {request.currency} cannot be converted: load the rate "
                "(closeloop tryton rates --file <rates.csv>) and replay this exception"
            )
    return refused


def ensure_payment_terms(
    rpc: TrytonRPC, days: Iterable[int], known: dict[int, int]
) -> dict[int, int]:
    """The ids of the "Net <N> days" payment terms for each of ``days``: from ``known`` (the
    session's, updated), else one search by name and one create of the missing ones (a
    remainder line due N days after the invoice date)."""
    wanted = sorted(set(days) - set(known))
    if wanted:
        names = {TERM_NAME.format(days=d): d for d in wanted}
        rows = rpc.search_read(
            "account.invoice.payment_term", [["name", "in", list(names)]], ["name"]
        )
        known.update({names[r["name"]]: int(r["id"]) for r in rows})
        missing = [d for d in wanted if d not in known]
        if missing:
            created = rpc.create(
                "account.invoice.payment_term",
                [
                    {
                        "name": TERM_NAME.format(days=d),
                        "lines": [
                            [
                                "create",
                                [
                                    {
                                        "type": "remainder",
                                        "relativedeltas": [
                                            ["create", [{"days": d, "weeks": 0, "months": 0}]]
                                        ],
                                    }
                                ],
                            ]
                        ],
                    }
                    for d in missing
                ],
            )
            known.update(zip(missing, created, strict=True))
    return known


def comment(request: InvoiceRequest) -> str:
    """The invoice's comment: the mention, and the customer's VAT number when given."""
    parts = [request.mention.strip()]
    if request.customer_tax_id:
        parts.append(f"Customer VAT number: {request.customer_tax_id}")
    return "\n".join(p for p in parts if p)


def _compact(code: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", code.upper())


def tax_identifier(identifiers: Sequence[dict[str, Any]], tax_id: str | None) -> int | None:
    """The id of the party identifier (``{"id", "code"}`` rows) whose code is ``tax_id``,
    however either is spaced or punctuated; ``None`` when there is none."""
    if not tax_id:
        return None
    wanted = _compact(tax_id)
    return next((int(i["id"]) for i in identifiers if _compact(i["code"] or "") == wanted), None)


def term_values(
    request: InvoiceRequest,
    *,
    company_currency: str,
    currency: int | None,
    lines: Sequence[int],
    term: int | None,
    identifier: int | None,
) -> dict[str, Any]:
    """What is written on the invoice of ``request`` with its reference and date: the
    currency (an id) on it and its ``lines`` when the request's differs from the company's,
    the payment ``term``, the comment and the party's tax ``identifier``."""
    values: dict[str, Any] = {"reference": request.reference, "invoice_date": request.dated}
    if request.currency and request.currency != company_currency and currency is not None:
        values["currency"] = currency
        if lines:
            values["lines"] = [["write", sorted(lines), {"currency": currency}]]
    if term is not None:
        values["payment_term"] = term
    text = comment(request)
    if text:
        values["comment"] = text
    if identifier is not None:
        values["party_tax_identifier"] = identifier
    return values
