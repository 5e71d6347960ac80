"""The write path every Accounting resource shares: the elements of a request body and a
batch written with or without ``summarizeErrors``.

Writes take ``{"Contacts": [...]}`` (or ``Invoices``, ``Items``, ``Options``...) or one
object. With ``summarizeErrors`` true (the default) one bad element refuses the whole
batch: 400 ``ValidationException`` whose ``Elements`` are the bad elements with their
``ValidationErrors``, nothing written (each element is checked after the ones before it
were applied, so two payments that together overpay an invoice are refused; the records are
restored from a copy when one fails). With ``summarizeErrors=false`` each element stands
alone: 200, good elements written with ``StatusAttributeString`` ``OK``, bad ones echoed with
``ERROR``, their ``ValidationErrors`` and the resource's flag (``HasErrors`` for invoices
and credit notes, ``HasValidationErrors`` for contacts and payments; items and tracking have
none) true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from closeloop.sandboxes.xero.org import Organisation
from closeloop.sandboxes.xero.wire import bad_request, echo, validation_error

Checker = Callable[[dict[str, Any]], tuple[list[str], dict[str, Any]]]
Applier = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
Renderer = Callable[[dict[str, Any]], dict[str, Any]]


def summarize(params: dict[str, str]) -> bool:
    """Whether ``summarizeErrors`` is on (the default)."""
    return params.get("summarizeErrors", "true").lower() != "false"


def elements(body: Any, key: str, record_id: str | None, id_key: str) -> list[dict[str, Any]]:
    """The elements of a write: ``body[key]`` or ``body`` itself; with ``record_id`` (a
    write to ``/{Resource}/{id}``) exactly one, given that id. Raises 400
    ``PostDataInvalidException`` otherwise."""
    rows = body.get(key) if isinstance(body, dict) and key in body else [body]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not rows:
        raise bad_request("PostDataInvalidException", f"The request must hold {key}")
    if record_id is not None:
        if len(rows) != 1:
            raise bad_request("PostDataInvalidException", "One element updates one record")
        rows = [{**rows[0], id_key: record_id}]
    return rows


def write(
    org: Organisation,
    rows: list[dict[str, Any]],
    summarized: bool,
    check: Checker,
    apply: Applier,
    render: Renderer,
    flag: str | None,
) -> list[dict[str, Any]]:
    """Check and apply each element in turn; the answers (see the module's docstring).
    Raises :class:`~.wire.XeroError` 400 when ``summarized`` and an element failed."""

    def failed(element: dict[str, Any], errors: list[str]) -> dict[str, Any]:
        echoed: dict[str, Any] = echo(element)
        return (
            echoed
            | ({flag: True} if flag else {})
            | {
                "StatusAttributeString": "ERROR",
                "ValidationErrors": [{"Message": m} for m in errors],
            }
        )

    answers, bad = [], []
    snapshot = org.snapshot() if summarized else None
    for element in rows:
        errors, plan = check(element)
        if errors:
            answers.append(failed(element, errors))
            bad.append(answers[-1])
        else:
            answers.append(render(apply(element, plan)) | {"StatusAttributeString": "OK"})
    if bad and snapshot is not None:
        org.restore(snapshot)
        raise validation_error(bad)
    return answers
