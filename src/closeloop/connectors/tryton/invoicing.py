"""Invoicing in Tryton: a project's billable time and charges become a referenced customer
invoice of the connector's company (:mod:`.drafts`), in the deal's currency with its payment
term and legal mention (:mod:`.invoice_terms`), screened for missing exchange rates first,
then posted; invoices read back (:mod:`.invoice_reads`); keys: see :mod:`.operations`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from closeloop.connectors.tryton.charges import billed_lines
from closeloop.connectors.tryton.drafts import InvoiceDrafting
from closeloop.connectors.tryton.invoice_reads import InvoiceState
from closeloop.connectors.tryton.invoice_terms import (
    InvoiceRequest,
    MissingRateError,
    rate_refusals,
)
from closeloop.connectors.tryton.rates import rate_dates
from closeloop.connectors.tryton.rpc import after_write

__all__ = ["InvoiceRequest", "InvoiceState", "InvoicingOperations", "MissingRateError"]


class InvoicingOperations(InvoiceDrafting):
    """The invoicing part of :class:`~.operations.TrytonOperations` (a mixin: it needs
    ``rpc``, ``ids`` and ``find_works`` from the class that combines it, and the session's
    caches: payment term ids by days, currency ids by code, each currency's earliest rate
    date)."""

    _rates_since: dict[str, date]

    def find_invoiced(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Customer invoices by reference, each with the charge keys it bills (``charges``).
        Two calls (one when none is found)."""
        found = self.find_invoices(references)
        if not found:
            return {}
        keys: dict[str, set[str]] = {}
        for line in billed_lines(self.rpc, self.ids.company, (), found):
            if line.reference in found:
                keys.setdefault(line.reference, set()).add(line.key)
        return {r: replace(i, charges=tuple(sorted(keys.get(r, ())))) for r, i in found.items()}

    def invoice_project(
        self, project_key: str, up_to: date, reference: str, invoice_date: date | None = None
    ) -> InvoiceState | None:
        """Invoice one project (:meth:`invoice_projects`): the draft invoice, or ``None``."""
        request = InvoiceRequest(project_key, up_to, reference, invoice_date)
        return self.invoice_projects([request])[0]

    def screen_invoices(self, requests: Sequence[InvoiceRequest]) -> dict[str, Exception]:
        """What Tryton would refuse to post among ``requests``, decided before anything is
        created, by reference: a :class:`MissingRateError` for a request in a foreign
        currency without a rate of that currency and of the company's on or before its
        invoice date. One read of rates, only when some request is in a foreign currency
        that this session has not yet seen rates for (currencies and earliest rate dates
        found are remembered)."""
        own = self.ids.currency_code
        foreign = [r for r in requests if r.currency and r.currency != own]
        if not foreign:
            return {}
        since = self._rates_since
        if rate_refusals(foreign, own, self.ids.entity, since):  # not known yet: read
            codes = sorted({str(r.currency) for r in foreign} | {own})
            found = rate_dates(self.rpc, codes, max(r.dated for r in foreign))
            for code, (currency, earliest) in found.items():
                self._currencies[code] = currency
                since[code] = min(earliest, since.get(code, earliest))
        return dict(rate_refusals(foreign, own, self.ids.entity, since))

    def invoice_projects(self, requests: Sequence[InvoiceRequest]) -> list[InvoiceState | None]:
        """Screen ``requests`` (:meth:`screen_invoices`), then :meth:`create_invoices`.

        Raises the first refusal of the screen (:class:`MissingRateError`: then nothing is
        created), and what :meth:`create_invoices` raises.
        """
        refused = self.screen_invoices(requests)
        if refused:
            raise next(iter(refused.values()))
        return self.create_invoices(requests)

    def post_invoices(self, references: Sequence[str]) -> dict[str, InvoiceState]:
        """Post the draft invoices among ``references`` in one call (posted ones are left as
        they are); the invoices by reference after it. Three calls. Raises Tryton's refusal
        (:class:`~.rpc.TrytonError`, a closed period say) of any: then none is posted."""
        found = self.find_invoices(references)
        drafts = [i.id for i in found.values() if i.state == "draft"]
        if drafts:
            self.rpc.call("account.invoice", "post", drafts)
            with after_write():
                found = self.find_invoices(references)
        return found
