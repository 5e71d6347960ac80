"""A Xero organisation (tenant) in memory: its records, the clock of ``UpdatedDateUTC`` and
the reads every list endpoint shares: ``where``, ``order`` (:mod:`.query`),
``If-Modified-Since`` and ``page``/``pageSize``.

Records are held as Xero renders them (money as ``Decimal``), plus ``_updated`` (an aware
``datetime``) for ``If-Modified-Since``. Every write takes a new ``UpdatedDateUTC`` strictly
later than the last one (at millisecond resolution, the .NET date's), so a client that reads
"modified since the last ``UpdatedDateUTC`` I saw" never misses a write made in the same
millisecond. ``If-Modified-Since`` keeps records modified at or after the given moment
(Xero: "records created or modified since this timestamp"; inclusive, so a client's overlap
is safe). Lists are ordered by ``UpdatedDateUTC`` then id unless ``order`` says otherwise
(Xero does not document a default order); with ``page`` (1-based) they are cut into pages
of ``pageSize`` (default 100, at most 1000) and carry ``pagination``; without ``page``,
everything is answered (``pageSize`` alone changes nothing).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from closeloop.sandboxes.xero.query import order, where
from closeloop.sandboxes.xero.wire import XeroError, bad_request, msdate


@dataclass
class Organisation:
    """One tenant: its id, name, records and a lock every read and write holds."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = "closeloop sandbox (UK)"
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    tracking: dict[str, dict[str, Any]] = field(default_factory=dict)
    currencies: tuple[str, ...] = ("GBP", "EUR", "USD")
    invoice_number: int = 0
    credit_note_number: int = 0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    lock: threading.RLock = field(default_factory=threading.RLock)
    _last: datetime = field(default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC))

    def __post_init__(self) -> None:
        self.created = self.clock().astimezone(UTC).replace(microsecond=0)

    def stamp(self) -> datetime:
        """A new ``UpdatedDateUTC``: now to the millisecond, after every earlier one."""
        now = self.clock().astimezone(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last:
            now = self._last + timedelta(milliseconds=1)
        self._last = now
        return now

    def touch(self, record: dict[str, Any]) -> None:
        """Mark ``record`` as written now."""
        moment = self.stamp()
        record["_updated"] = moment
        record["UpdatedDateUTC"] = msdate(moment)

    def snapshot(self) -> tuple[Any, ...]:
        """A copy of every record, for :meth:`restore` (a batch refused whole)."""
        return copy.deepcopy(
            (
                self.contacts,
                self.invoices,
                self.payments,
                self.credit_notes,
                self.items,
                self.tracking,
                self.invoice_number,
                self.credit_note_number,
            )
        )

    def restore(self, snapshot: tuple[Any, ...]) -> None:
        """Put back the records :meth:`snapshot` copied."""
        (
            self.contacts,
            self.invoices,
            self.payments,
            self.credit_notes,
            self.items,
            self.tracking,
            self.invoice_number,
            self.credit_note_number,
        ) = snapshot

    def next_invoice_number(self) -> str:
        """``INV-0001``, ``INV-0002``, ... (Xero's default invoice number sequence)."""
        self.invoice_number += 1
        return f"INV-{self.invoice_number:04d}"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its private keys (``_...``)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def listing(
    rows: list[dict[str, Any]],
    params: dict[str, str],
    since: datetime | None,
    render: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, int] | None]:
    """The rows a list endpoint answers (rendered), and its ``pagination`` when ``page``
    was given. ``where`` and ``order`` apply to the rendered rows (:mod:`.query`). Raises
    :class:`XeroError` 400 on a bad ``page``/``pageSize``, ``where`` or ``order``."""
    keep = where(params["where"]) if "where" in params else None
    if since is not None:
        rows = [r for r in rows if r["_updated"] >= since]
    rows = sorted(rows, key=lambda r: (r["_updated"], _record_id(r)))
    answers = [render(r) for r in rows]
    if keep is not None:
        answers = [a for a in answers if keep(a)]
    if "order" in params:
        answers = order(answers, params["order"])
    if "page" not in params:
        return answers, None
    try:
        number, size = int(params["page"]), int(params.get("pageSize", "100"))
    except ValueError:
        raise bad_request("QueryParseException", "page must be a whole number", 16) from None
    if number < 1 or not 1 <= size <= 1000:
        raise XeroError(
            400,
            {
                "ErrorNumber": 16,
                "Type": "QueryParseException",
                "Message": "page must be 1 or more, pageSize 1 to 1000",
            },
        )
    pages = (len(answers) + size - 1) // size
    return answers[(number - 1) * size : number * size], {
        "page": number,
        "pageSize": size,
        "pageCount": pages,
        "itemCount": len(answers),
    }


_ID_KEYS = ("InvoiceID", "CreditNoteID", "PaymentID", "ContactID", "ItemID", "TrackingCategoryID")


def _record_id(record: dict[str, Any]) -> str:
    return next((str(record[k]) for k in _ID_KEYS if k in record), "")
