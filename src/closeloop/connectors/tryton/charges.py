"""Charges in Tryton: lines an invoice bills besides recorded time (a milestone, a retainer
fee, overage hours, a re-billed expense), each keyed so that it is billed once.

A charge's invoice line carries its key as its whole ``note``, ``closeloop:<charge key>``
(:data:`~.keys.CHARGE_NOTE`): searchable by exact match, kept off the printed invoice, and
writable on a posted invoice too. A key is *billed* when the lines of the company's customer
invoices that are not cancelled carry it more often than the credit notes' lines do (a
credit note's lines get the key of the line they credit, :mod:`.credits`): a credited charge
can be billed anew. An expense's receipt address is appended to the line's description,
``<description> (receipt: <url>)``.

Products: milestones, retainer fees and overage are billed with the service product time is
billed with ("Consulting"); an expense with the product of its category, ``Expense:
<category>`` (``Other`` when it has none), a service in unit ``u`` made on first use with
the service product's account category ("Services": each company's revenue account and
customer taxes), found again by name. Accounts and taxes are what Tryton's invoice line
``on_change`` of the product gives for the customer in the company (its customer taxes
through the party's customer tax rule): the code path Tryton's project invoicing takes. One
``on_change`` call per product, customer and tax rule, remembered for the session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from closeloop.connectors.tryton.keys import CHARGE_NOTE, charge_key_of
from closeloop.connectors.tryton.rpc import TrytonError, TrytonRPC
from closeloop.connectors.tryton.setup import TrytonIds

EXPENSE_PRODUCT = "Expense: {category}"
"""The name of an expense category's product."""
DEFAULT_CATEGORY = "Other"


@dataclass(frozen=True)
class Charge:
    """A line to bill besides time: ``key`` (billed once), ``kind`` (``milestone``,
    ``retainer``, ``overage``, ``expense``), ``description``, ``quantity`` and
    ``unit_price`` (in the invoice's currency), an expense's ``category`` and ``receipt``
    address, the project element it belongs to (``task``: a milestone's key, a role)."""

    key: str
    kind: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    category: str | None = None
    task: str | None = None
    receipt: str | None = None

    @property
    def text(self) -> str:
        """The invoice line's description: the charge's, and its receipt's address."""
        if self.receipt:
            return f"{self.description} (receipt: {self.receipt})"
        return self.description


@dataclass(frozen=True)
class BilledLine:
    """A charge line of a customer invoice (or credit note) that is not cancelled."""

    key: str
    quantity: float
    invoice: int
    reference: str | None
    state: str


class ChargeError(TrytonError):
    """A charge Tryton cannot bill as it is set up (a product without revenue account)."""


def billed_lines(
    rpc: TrytonRPC, company: int, keys: Iterable[str], references: Iterable[str] = ()
) -> list[BilledLine]:
    """The charge lines of company ``company``'s customer invoices and credit notes that are
    not cancelled, carrying any of ``keys``, and every charge line of its invoices
    referenced as one of ``references``. One search (none when both are empty)."""
    notes = sorted({CHARGE_NOTE.format(key=k) for k in keys})
    refs = sorted(set(references))
    clauses: list[Any] = []
    if notes:
        clauses.append([["note", "in", notes]])
    if refs:
        clauses.append([["invoice.reference", "in", refs], ["note", "like", "closeloop:%"]])
    if not clauses:
        return []
    rows = rpc.search_read(
        "account.invoice.line",
        [
            ["invoice.company", "=", company],
            ["invoice.type", "=", "out"],
            ["invoice.state", "!=", "cancelled"],
            ["OR", *clauses],
        ],
        ["note", "quantity", "invoice", "invoice.reference", "invoice.state"],
    )
    lines = []
    for row in rows:
        key = charge_key_of(row["note"])
        if key is not None:
            invoice = row.get("invoice.") or {}
            lines.append(
                BilledLine(
                    key=key,
                    quantity=float(row["quantity"] or 0),
                    invoice=int(row["invoice"]),
                    reference=invoice.get("reference"),
                    state=str(invoice.get("state")),
                )
            )
    return lines


def net_billed(lines: Iterable[BilledLine]) -> dict[str, list[str]]:
    """The keys billed among ``lines`` (invoice lines carrying a key outnumber the credit
    notes' lines carrying it), each with the references of the invoices that bill it."""
    net: dict[str, int] = defaultdict(int)
    references: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if line.quantity > 0:
            net[line.key] += 1
            if line.reference:
                references[line.key].append(line.reference)
        elif line.quantity < 0:
            net[line.key] -= 1
    return {k: sorted(references[k]) for k, n in net.items() if n > 0}


class ChargeOperations:
    """The charge part of invoicing (a mixin of :class:`~.operations.TrytonOperations`: it
    needs ``rpc``, ``ids`` and the two session caches below: expense products by category,
    invoice line defaults by product, party and tax rule)."""

    rpc: TrytonRPC
    ids: TrytonIds
    _expense_products: dict[str, int]
    _line_defaults: dict[tuple[int, int, int | None], dict[str, Any]]

    def charge_products(self, charges: Iterable[Charge]) -> dict[str, int]:
        """The product of each charge, by key (:func:`ensure_expense_products` for
        expenses)."""
        charges = list(charges)
        expenses = self.ensure_expense_products(
            c.category or DEFAULT_CATEGORY for c in charges if c.kind == "expense"
        )
        return {
            c.key: expenses[c.category or DEFAULT_CATEGORY]
            if c.kind == "expense"
            else self.ids.product
            for c in charges
        }

    def ensure_expense_products(self, categories: Iterable[str]) -> dict[str, int]:
        """Product ids of the expense categories (``Expense: <category>``), made when Tryton
        has none: a service in unit ``u`` with the service product's account category.
        Remembered for the session; one search for categories not seen yet, and three
        calls more (the unit, the templates, their products) when some must be made."""
        categories = list(categories)
        wanted = sorted(set(categories) - set(self._expense_products))
        if wanted:
            names = {EXPENSE_PRODUCT.format(category=c): c for c in wanted}
            rows = self.rpc.search_read(
                "product.product",
                ["OR", [["template.name", "in", list(names)]], [["id", "=", self.ids.product]]],
                ["template.name", "template.account_category"],
            )
            found = {
                names[str(r["template."]["name"])]: int(r["id"])
                for r in rows
                if r["template."]["name"] in names
            }
            missing = [n for n, c in names.items() if c not in found]
            if missing:
                service = next(r for r in rows if r["id"] == self.ids.product)
                (unit,) = self.rpc.search_read("product.uom", [["symbol", "=", "u"]], ["id"])
                self.rpc.create(
                    "product.template",
                    [
                        {
                            "name": name,
                            "type": "service",
                            "default_uom": unit["id"],
                            "list_price": Decimal(0),
                            "account_category": service["template."]["account_category"],
                            "products": [["create", [{}]]],
                        }
                        for name in missing
                    ],
                )
                made = self.rpc.search_read(
                    "product.product", [["template.name", "in", missing]], ["template.name"]
                )
                found.update({names[str(r["template."]["name"])]: int(r["id"]) for r in made})
            self._expense_products.update(found)
        return {c: self._expense_products[c] for c in categories}

    def line_defaults(
        self, party: int, rule: int | None, products: Iterable[int]
    ) -> dict[int, dict[str, Any]]:
        """What Tryton puts on a customer invoice line of each product for ``party`` (whose
        customer tax rule in this company is ``rule``): ``{product: {"account", "unit",
        "taxes"}}``, from the line's ``on_change`` of the product. One call per product not
        seen yet with this party and rule. Raises :class:`ChargeError` for a product
        without revenue account in this company."""
        out: dict[int, dict[str, Any]] = {}
        for product in sorted(set(products)):
            cached = self._line_defaults.get((product, party, rule))
            if cached is None:
                values = {
                    "product": product,
                    "party": party,
                    "company": self.ids.company,
                    "invoice_type": "out",
                    "type": "line",
                    "invoice": None,
                    "unit": None,
                    "taxes": [],
                }
                changes = self.rpc.call("account.invoice.line", "on_change", values, ["product"])
                if not changes.get("account"):
                    raise ChargeError(
                        f"product {product} has no revenue account in company "
                        f"{self.ids.entity}: give its account category one"
                    )
                cached = {
                    "account": changes["account"],
                    "unit": changes.get("unit"),
                    "taxes": _added(changes.get("taxes")),
                }
                self._line_defaults[(product, party, rule)] = cached
            out[product] = cached
        return out

    def invoice_heads(self, parties: Iterable[int]) -> dict[int, dict[str, Any]]:
        """What Tryton puts on a customer invoice of each party in this company (invoice
        address, receivable account, payment term, tax identifier), from the invoice's
        ``on_change`` of the party: one call per party."""
        heads = {}
        for party in sorted(set(parties)):
            values = {"party": party, "company": self.ids.company, "type": "out"}
            changes = self.rpc.call("account.invoice", "on_change", values, ["party"])
            heads[party] = {
                k: changes.get(k)
                for k in ("invoice_address", "account", "payment_term", "party_tax_identifier")
                if changes.get(k) is not None
            }
        return heads


def charge_line_values(
    charges: Sequence[Charge],
    products: dict[str, int],
    defaults: dict[int, dict[str, Any]],
    *,
    party: int,
    company: int,
    currency: int,
) -> list[dict[str, Any]]:
    """The invoice line values of ``charges`` for ``party``'s invoice in ``currency`` (an
    id): product, account, unit and taxes as Tryton would put them (``defaults`` by
    product), quantity, unit price, description and the key as note."""
    lines = []
    for charge in charges:
        product = products[charge.key]
        line = defaults[product]
        values: dict[str, Any] = {
            "type": "line",
            "invoice_type": "out",
            "company": company,
            "party": party,
            "currency": currency,
            "product": product,
            "account": line["account"],
            "unit": line["unit"],
            "quantity": float(charge.quantity),
            "unit_price": charge.unit_price,
            "description": charge.text,
            "note": CHARGE_NOTE.format(key=charge.key),
        }
        if line["taxes"]:
            values["taxes"] = [["add", line["taxes"]]]
        lines.append(values)
    return lines


def _added(taxes: Any) -> list[int]:
    """Tax ids of an ``on_change`` result's Many2Many value (``{"add": [[index, {"id"}]]}``
    or a list of ids)."""
    if isinstance(taxes, dict):
        return sorted(int(entry[1]["id"]) for entry in taxes.get("add") or [])
    return sorted(int(t) for t in taxes or [])
