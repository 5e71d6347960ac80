"""Tryton's charge lines as reconciliation facts: the ``charges`` domain of
:mod:`closeloop.ports.reconcile` (the other domains: :mod:`.facts`).

One fact per line of the company's customer invoices and credit notes (every state: the
comparison decides what a draft or a cancelled one counts for) that carries a charge key:

- a line whose ``note`` is the hub's ``closeloop:<charge key>`` (:data:`~.keys.CHARGE_NOTE`,
  written by :mod:`.charges` on an invoice's lines, by :mod:`.credits` on a credit note's);
- a credit note's line without such a note whose ``origin`` (the line it credits) has one:
  Tryton's credit wizard does not copy a line's note (its ``_credit`` copies product,
  description, unit price, accounts and taxes, and negates the quantity), so a credit note
  made in Tryton by hand carries no key of its own; it is the credited line's charge.

``key``: ``<charge key>@<line id>`` (the key as the line, or its origin, carries it);
``external_id``: the line id. ``charge``: the charge key, a milestone's without its attempt
suffix (``milestone:<project key>:<milestone id>[:<attempt>]`` -> its first three parts);
``kind``: the key's first part; ``project_key``: its second (left out for a key without
one); ``amount``: the line's untaxed ``amount`` (Decimal; negative on a credit note, whose
lines have the credited quantity negated and the same unit price); ``invoice_reference``
(``None`` when the invoice has none) and ``state``: its invoice's. ``modified_at``: the
line's last write (or creation), aware UTC.

Read in pages by id: one ``search_read`` of ``page`` rows a call, the invoice's and the
origin's fields dotted (and one call more when the count is a multiple of ``page``).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.keys import CHARGE_NOTE, charge_key_of
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.ports.reconcile import CHARGES, Fact

LINE_MODEL = "account.invoice.line"

_NOTE_LIKE = CHARGE_NOTE.format(key="") + "%"  # "closeloop:%"
_FIELDS = [
    "note",
    "amount",
    "write_date",
    "create_date",
    "invoice.reference",
    "invoice.state",
    "origin.note",
]


def charge_facts(ops: TrytonOperations, system: str, *, page: int) -> Iterator[list[Fact]]:
    """The ``charges`` facts (module docstring) of the company of ``ops``, named after the
    configured ``system``: a list per ``search_read`` of ``page`` rows that yielded any.

    Raises :class:`~closeloop.ports.connector.TransientError` when Tryton cannot answer now
    (and the RPC client's other errors), while reading.
    """
    domain: list[Any] = [
        ["invoice.company", "=", ops.ids.company],
        ["invoice.type", "=", "out"],
        [
            "OR",
            [["note", "like", _NOTE_LIKE]],
            [["origin.note", "like", _NOTE_LIKE, LINE_MODEL]],
        ],
    ]
    last = 0
    while True:
        rows = ops.rpc.search_read(
            LINE_MODEL,
            [*domain, ["id", ">", last]],
            _FIELDS,
            limit=page,
            order=[["id", "ASC"]],
        )
        facts = [fact for row in rows if (fact := charge_fact(row, system)) is not None]
        if facts:
            yield facts
        if len(rows) < page:
            return
        last = int(rows[-1]["id"])


def charge_fact(row: dict[str, Any], system: str) -> Fact | None:
    """The fact of an invoice line row read with this module's fields (``None`` when
    neither its note nor its origin's is a charge note)."""
    key = charge_key_of(row.get("note"))
    if key is None:
        key = charge_key_of((row.get("origin.") or {}).get("note"))
    if key is None:
        return None
    parts = key.split(":")
    charge = ":".join(parts[:3]) if parts[0] == "milestone" else key
    invoice = row.get("invoice.") or {}
    amount = row.get("amount")
    fields: dict[str, Any] = {"charge": charge, "kind": parts[0]}
    if len(parts) > 1 and parts[1]:
        fields["project_key"] = parts[1]
    fields |= {
        "amount": amount if isinstance(amount, Decimal) else Decimal(str(amount or 0)),
        "invoice_reference": invoice.get("reference"),
        "state": invoice.get("state"),
    }
    return Fact(
        domain=CHARGES,
        key=f"{key}@{row['id']}",
        system=system,
        external_id=str(row["id"]),
        fields=fields,
        modified_at=row.get("write_date") or row.get("create_date"),
    )
