"""The cross-reference (xref) as flows reach it: by signals, answered in the same transaction.

Flows stay pure: a flow that needs to know what a record is in another system sends
:func:`~closeloop.ports.flows.xref_lookup` (a signal to ``xref`` keyed ``<canonical type>:
<system>:<external id>``) and receives ``Signal(flow, business key, "xref", {"entity": ...,
"system": target, "external_id": <id or None>})``. With ``watch`` a lookup that finds nothing
also registers the asker: when the record is linked later (by a flow or by a person with
``closeloop xref link``), the asker receives the answer then. :func:`~closeloop.ports.flows.
xref_link` records a link (one partner on each side, see
:meth:`~closeloop.ports.store.UnitOfWork.link_xref`).

Watchers are kept as the state of an ``xref`` flow instance under the same key, so they live
and commit with everything else the transaction decides.
"""

from __future__ import annotations

from closeloop.domain.records import FlowState, Signal
from closeloop.ports.flows import XREF
from closeloop.ports.store import UnitOfWork

__all__ = ["answer_xref"]


def answer_xref(
    tx: UnitOfWork, signal: Signal, watch: FlowState | None
) -> tuple[list[Signal], FlowState | None]:
    """Carry out a ``lookup`` or ``link`` signal (module docstring). Returns the replies to
    deliver and the instance's new watcher state (``None``: unchanged). Raises ``ValueError``
    for a malformed key or an unknown signal name (a flow bug: its record is rejected)."""
    canonical_type, system, external_id = _parse(signal.business_key)
    target = str(signal.data["system"])
    canonical_id = tx.canonical_ids(canonical_type, system, [external_id])[external_id]
    watchers: list[list[str]] = [list(w) for w in (watch.data.get("watchers", []) if watch else [])]
    if signal.name == "lookup":
        reply_flow, reply_key = signal.data["reply_to"]
        found = tx.find_xref(canonical_type, canonical_id, target)
        reply = _reply(signal.business_key, reply_flow, reply_key, target, found)
        if found is None and signal.data.get("watch"):
            watcher = [reply_flow, reply_key, target]
            if watcher not in watchers:
                return [reply], _watching(signal.business_key, [*watchers, watcher])
        return [reply], None
    if signal.name == "link":
        linked = str(signal.data["external_id"])
        tx.link_xref(canonical_type, canonical_id, target, linked)
        woken = [w for w in watchers if w[2] == target]
        replies = [_reply(signal.business_key, w[0], w[1], target, linked) for w in woken]
        rest = [w for w in watchers if w[2] != target]
        return replies, (_watching(signal.business_key, rest) if woken else None)
    raise ValueError(f"unknown cross-reference signal {signal.name!r}")


def _parse(business_key: str) -> tuple[str, str, str]:
    parts = business_key.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"cross-reference key {business_key!r} is not <canonical type>:<system>:<id>"
        )
    return parts[0], parts[1], parts[2]


def _reply(entity: str, flow: str, key: str, system: str, found: str | None) -> Signal:
    return Signal(flow, key, "xref", {"entity": entity, "system": system, "external_id": found})


def _watching(key: str, watchers: list[list[str]]) -> FlowState:
    return FlowState(XREF, key, "watched" if watchers else "idle", {"watchers": watchers})
