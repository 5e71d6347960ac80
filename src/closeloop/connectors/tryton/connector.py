"""The Tryton connector as the engine sees it: commands in batches, lookups by idempotency
key, and a change feed of customer invoices (posted, paid) by write date.

Commands carry the canonical operations of the ``erp`` role
(:mod:`closeloop.domain.operations`); this module translates them into Tryton's models
(:class:`~.operations.CustomerSpec`, :class:`~.operations.ProjectSpec`, timesheet lines,
invoices with their charges, credit notes). ``close_project`` and ``record_payment``
(``{reference, key, amount, date}``) are Tryton's own. Idempotency keys have the form
``<system>:<operation>:<key>``, ``<key>`` being the key the operation makes visible in
Tryton (see :mod:`.operations`), so that :meth:`find` can look an earlier write up from
the key alone (a credit note: by its credit reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from closeloop.connectors.bulk import (
    isolate,
    malformed,
    parse_each,
    run_groups,
    transport_outcome,
)
from closeloop.connectors.tryton import facts, translate
from closeloop.connectors.tryton.invoicing import InvoiceState
from closeloop.connectors.tryton.operations import (
    TrytonOperations,
)
from closeloop.connectors.tryton.rpc import TrytonError
from closeloop.domain.changes import Change
from closeloop.domain.commands import (
    Applied,
    Command,
    ExceptionClass,
    Outcome,
    Permanent,
    Transient,
)
from closeloop.domain.operations import (
    CloseProject,
    PostInvoice,
    split_idempotency_key,
)
from closeloop.domain.operations import idempotency_key as role_key
from closeloop.mdm.matching import Party, match_customer
from closeloop.ports.connector import (
    AmbiguousError,
    ConnectorLimits,
    RefusedError,
    TransientError,
)
from closeloop.ports.reconcile import Fact

T = TypeVar("T")
SYSTEM = "tryton"
INVOICES = "account.invoice"
PAGE = 500


def idempotency_key(operation: str, key: str, system: str = SYSTEM) -> str:
    """The idempotency key of a Tryton ``operation`` on ``key`` for the system named
    ``system`` (:func:`closeloop.domain.operations.idempotency_key`)."""
    return role_key(system, operation, key)


def invoice_payload(invoice: InvoiceState) -> dict[str, Any]:
    """An invoice as a change payload (JSON): Tryton's fields, ``due_date`` (ISO, ``None``
    for a draft), ``legal_entity`` (the code of the company's entity), ``is_credit_note``
    and ``credited_reference`` (the reference of the invoice a credit note credits)."""
    return {
        "id": invoice.id,
        "reference": invoice.reference,
        "number": invoice.number,
        "state": invoice.state,
        "party_code": invoice.party_code,
        "currency": invoice.currency,
        "invoice_date": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
        "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        "legal_entity": invoice.legal_entity,
        "untaxed_amount": str(invoice.untaxed_amount),
        "tax_amount": str(invoice.tax_amount),
        "total_amount": str(invoice.total_amount),
        "amount_to_pay": str(invoice.amount_to_pay),
        "amount_paid": str(
            invoice.total_amount - invoice.amount_to_pay
            if invoice.state in ("posted", "paid")
            else Decimal(0)
        ),
        "is_credit_note": invoice.is_credit_note,
        "credited_reference": invoice.credited_reference,
    }


def invoiced_payload(invoice: InvoiceState | None) -> dict[str, Any]:
    """The result of ``invoice_project``: the invoice (:func:`invoice_payload`) with
    ``charges``, the charge keys it bills; ``{"invoice": None}`` when there was nothing to
    invoice."""
    if invoice is None:
        return {"invoice": None}
    return {**invoice_payload(invoice), "charges": list(invoice.charges)}


def credit_payload(credit: InvoiceState) -> dict[str, Any]:
    """The result of ``credit_invoice``: the credit note's ``reference``, ``number``,
    ``state`` and amounts (negative, as strings), and ``credited``, the reference of the
    invoice it credits."""
    return {
        "reference": credit.reference,
        "number": credit.number,
        "state": credit.state,
        "untaxed_amount": str(credit.untaxed_amount),
        "tax_amount": str(credit.tax_amount),
        "total_amount": str(credit.total_amount),
        "credited": credit.credited_reference,
    }


class TrytonConnector:
    """Runs closeloop's commands in Tryton through :class:`TrytonOperations`.

    One writer at a time (``max_concurrent=1``, and one batch at a time per database across
    the systems of one process, such as one per legal entity's company): Tryton on SQLite
    loses concurrent creates to sequence races (tryton.md, gotcha 7; seen as "The number on
    work must be unique"). Timesheet lines go in bulk: consecutive
    ``add_timesheet_line`` commands of a batch become one ``create`` call.
    """

    def __init__(
        self, operations: TrytonOperations, *, system: str = SYSTEM, batch_size: int = 1000
    ) -> None:
        self.operations = operations
        self._system = system
        self._limits = ConnectorLimits(
            batch_size=batch_size,
            requests_per_window=50,
            window_s=1.0,
            max_concurrent=1,
            call_timeout_s=120,
        )

    @property
    def system(self) -> str:
        """The configured system name (default ``"tryton"``)."""
        return self._system

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
                        system=self._system,
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

    # --- reconciliation (closeloop.ports.reconcile.FactSource) ------------------------------
    def fact_domains(self) -> Sequence[str]:
        """Customers, projects, time, invoices and charges (:mod:`.facts`)."""
        return facts.DOMAINS

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        """Pages of every record of ``domain`` in this company, :data:`PAGE` rows a call
        (:func:`.facts.read_facts`: what each domain holds). Raises ``ValueError`` for a
        domain not in :meth:`fact_domains`, :class:`TransientError` when Tryton cannot
        answer now."""
        return facts.read_facts(self.operations, self._system, domain, page=PAGE)

    # --- commands ---------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands``; each operation's commands together in a few bulk calls.

        Commands of distinct business keys (what the engine sends: one per key) are grouped
        by operation; otherwise only consecutive runs of one operation are. In each group,
        what can be decided before writing is decided on data read once for the group, a
        bulk call Tryton refuses is halved until the refused command stands alone
        (:func:`~closeloop.connectors.bulk.isolate`), and each refused command gets its own
        permanent outcome. After a transport failure the remaining groups are not sent; when
        nothing was applied or refused at all, the failure is raised for the whole batch.
        """
        with self.operations.rpc.database_writer():  # one writer per database: see the class
            return run_groups(commands, self._run_group)

    def _run_group(self, operation: str, batch: list[Command]) -> list[Outcome]:
        bulk = {
            "add_timesheet_line": self._timesheet,
            "upsert_customer": self._customers,
            "upsert_project": self._projects,
            "match_customer": self._matches,
            "invoice_project": self._invoices,
            "post_invoice": self._posts,
        }.get(operation)
        if bulk is not None:
            return bulk(batch)
        outcomes: list[Outcome] = []
        for command in batch:
            try:
                outcomes.append(self._one(command))
            except (TransientError, AmbiguousError) as exc:
                outcomes.append(transport_outcome(exc))
                outcomes += [Transient(f"not sent: {exc}")] * (len(batch) - len(outcomes))
                break
        return outcomes

    def _one(self, command: Command) -> Outcome:
        handler = self._handlers().get(command.operation)
        if handler is None:
            return Permanent(ExceptionClass.VALIDATION, f"unknown operation {command.operation!r}")
        return _guard(lambda: handler(command.payload))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        ops = self.operations
        return {
            "close_project": lambda p: {
                "closed": ops.close_project(CloseProject.model_validate(p).key)
            },
            "credit_invoice": lambda p: credit_payload(ops.credit_invoice(translate.credit(p))),
            "record_payment": lambda p: {
                "recorded": ops.record_payment(
                    p["reference"], p["key"], Decimal(p["amount"]), date.fromisoformat(p["date"])
                )
            },
        }

    def _bulk(
        self,
        batch: list[Command],
        parse: Callable[[dict[str, Any]], T],
        call: Callable[[Sequence[T]], Sequence[Any]],
        result: Callable[[Any], dict[str, Any]],
    ) -> list[Outcome]:
        """Parse each command's payload (a malformed one is refused alone), run ``call`` on
        the parsed items through :func:`isolate`, and turn each item's result into its
        outcome: ``Applied(result(value))``, a refusal, or the transport failure."""
        outcomes, items = parse_each(batch, parse)
        results = isolate([item for _, item in items], call, _REFUSALS)
        for (position, _), value in zip(items, results, strict=True):
            outcomes[position] = _outcome(value, result)
        return [outcomes[i] for i in range(len(batch))]

    def _customers(self, batch: list[Command]) -> list[Outcome]:
        return self._bulk(
            batch,
            translate.customer,
            self.operations.upsert_customers,
            lambda party: {"party": party},
        )

    def _projects(self, batch: list[Command]) -> list[Outcome]:
        return self._bulk(
            batch, translate.project, self.operations.upsert_projects, translate.project_result
        )

    def _invoices(self, batch: list[Command]) -> list[Outcome]:
        """Screen the requests on rates read once (a foreign currency without a rate:
        refused each alone, nothing created), then invoice the rest in grouped calls."""
        ops = self.operations
        return self._screened(
            batch,
            translate.invoice_request,
            ops.screen_invoices,
            lambda request: request.reference,
            ops.create_invoices,
            invoiced_payload,
        )

    def _posts(self, batch: list[Command]) -> list[Outcome]:
        def post(references: Sequence[str]) -> list[InvoiceState | None]:
            found = self.operations.post_invoices(references)
            return [found.get(r) for r in references]

        return self._bulk(batch, lambda p: PostInvoice.model_validate(p).reference, post, _invoice)

    def _matches(self, batch: list[Command]) -> list[Outcome]:
        """Which ERP customer each account is (:func:`closeloop.mdm.matching.match_customer`):
        ``{"kind", "party_code", "party_id", "score", "explain", "candidates"}``; one read
        for the whole group."""

        def match(accounts: Sequence[tuple[Party, float]]) -> list[dict[str, Any]]:
            found, ids = self.operations.candidates_for(
                [(a.tax_ids, a.name, a.country) for a, _ in accounts]
            )
            out = []
            for (account, threshold), candidates in zip(accounts, found, strict=True):
                result = match_customer(account, candidates, threshold)
                hit = result.match
                out.append(
                    {
                        "kind": result.kind,
                        "party_code": hit.id if hit else None,
                        "party_id": ids.get(hit.id) if hit else None,
                        "score": result.score,
                        "explain": result.explain(),
                        "candidates": [[p.id, p.name, round(s, 1)] for p, s in result.candidates],
                    }
                )
            return out

        return self._bulk(batch, translate.account, match, lambda value: dict(value))

    def _timesheet(self, batch: list[Command]) -> list[Outcome]:
        """Screen the entries on data read once (unknown tasks, closed projects: refused
        each alone), then create the rest in one bulk call (halved only if Tryton still
        refuses it)."""
        ops = self.operations
        return self._screened(
            batch,
            translate.entry,
            ops.screen_entries,
            lambda entry: entry.key,
            ops.create_timesheet_lines,
            lambda line: {"line": line},
            on_refusal=ops.forget_cached,
        )

    def _screened(
        self,
        batch: list[Command],
        parse: Callable[[dict[str, Any]], T],
        screen: Callable[[Sequence[T]], dict[str, Exception]],
        key: Callable[[T], str],
        call: Callable[[Sequence[T]], Sequence[Any]],
        result: Callable[[Any], dict[str, Any]],
        on_refusal: Callable[[], None] | None = None,
    ) -> list[Outcome]:
        """Parse each payload (a malformed one refused alone), ``screen`` the items on data
        read once (its refusals by ``key``: each a permanent outcome of its command alone,
        nothing written for it), then run ``call`` on the rest through :func:`isolate`;
        ``on_refusal`` runs when Tryton still refused some of them."""
        outcomes, items = parse_each(batch, parse)
        try:
            refused = screen([item for _, item in items])
        except (TransientError, AmbiguousError) as exc:
            return [outcomes.get(i) or transport_outcome(exc) for i in range(len(batch))]
        accepted = [(p, item) for p, item in items if key(item) not in refused]
        for position, item in items:
            if key(item) in refused:
                outcomes[position] = _refusal(refused[key(item)])
        results = isolate([item for _, item in accepted], call, _REFUSALS)
        if on_refusal is not None and any(isinstance(r, _REFUSALS) for r in results):
            on_refusal()
        for (position, _), value in zip(accepted, results, strict=True):
            outcomes[position] = _outcome(value, result)
        return [outcomes[i] for i in range(len(batch))]

    # --- lookups ----------------------------------------------------------------------------
    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """Earlier writes for ``<system>:<operation>:<key>`` keys of this system (others are
        not its writes), one lookup per operation."""
        by_operation: dict[str, list[str]] = {}
        asked: dict[tuple[str, str], str] = {}
        for full in idempotency_keys:
            try:
                system, operation, key = split_idempotency_key(full)
            except ValueError:
                continue
            if system != self._system:
                continue
            by_operation.setdefault(operation, []).append(key)
            asked[operation, key] = full
        ops, found = self.operations, {}
        for operation, keys in by_operation.items():
            hits: dict[str, dict[str, Any]]
            if operation == "upsert_customer":  # key: <code> or <code>:<requester>
                codes = {k: k.split(":", 1)[0] for k in keys}
                parties = ops.find_customers(sorted(set(codes.values())))
                hits = {k: {"party": parties[c]} for k, c in codes.items() if c in parties}
            elif operation in ("upsert_project", "close_project"):
                hits = {
                    k: {"works": {k: v["id"]}, "project_id": v["id"]}
                    for k, v in ops.find_works(keys).items()
                }
            elif operation == "add_timesheet_line":
                hits = {k: {"line": v} for k, v in ops.find_timesheet_lines(keys).items()}
            elif operation == "invoice_project":
                hits = {k: invoiced_payload(v) for k, v in ops.find_invoiced(keys).items()}
            elif operation == "post_invoice":
                invoices = ops.find_invoices(keys)
                hits = {k: _invoice(v) for k, v in invoices.items() if v.state != "draft"}
            elif operation == "credit_invoice":  # key: the credit reference; done once posted
                credits = ops.find_invoices(keys)
                hits = {
                    k: credit_payload(v)
                    for k, v in credits.items()
                    if v.is_credit_note and v.state != "draft"
                }
            else:  # record_payment: no lookup by key alone; the operation itself is idempotent
                hits = {}
            found.update({asked[operation, k]: Applied(v) for k, v in hits.items()})
        return found


def _invoice(invoice: InvoiceState | None) -> dict[str, Any]:
    return invoice_payload(invoice) if invoice else {"invoice": None}


def _outcome(value: Any, result: Callable[[Any], dict[str, Any]]) -> Outcome:
    """The outcome of one item's result from :func:`isolate`."""
    if isinstance(value, (TransientError, AmbiguousError)):
        return transport_outcome(value)
    if isinstance(value, _REFUSALS):
        return _refusal(value)
    return Applied(result(value))


def _guard(action: Callable[[], dict[str, Any]]) -> Outcome:
    """Run one operation; Tryton's refusals and unknown references become permanent outcomes
    (transport failures propagate: the engine retries or looks up)."""
    try:
        return Applied(action())
    except _REFUSALS as exc:
        return _refusal(exc)


_REFUSALS = (TrytonError, RefusedError, LookupError, ValueError, TypeError)
"""What refuses one command (and, in a bulk call, is isolated): Tryton's refusals (its
calls are transactions: nothing of a refused call is written), a request that cannot be
sent, an unknown reference, a malformed command."""


def _refusal(exc: Exception) -> Permanent:
    """The permanent outcome of a refused operation: Tryton's class for its refusals, not
    found for unknown references, validation for a malformed command or a request that
    cannot be sent (text that is not valid Unicode)."""
    if isinstance(exc, RefusedError):
        return Permanent(ExceptionClass.VALIDATION, str(exc))
    if isinstance(exc, TrytonError):
        detail = f" ({exc.description})" if exc.description else ""
        return Permanent(exc.error_class, exc.message + detail)
    if isinstance(exc, (KeyError, ValueError, TypeError)):  # KeyError is a LookupError too
        return malformed(exc)
    return Permanent(ExceptionClass.NOT_FOUND, str(exc.args[0]))
