"""One legal entity's company in a Tryton database: the company and its party, the hub
user's access to it, its chart of accounts and defaults, fiscal years and sequences, and its
values on the shared service product (steps of :func:`~.setup.initialize`; each looks for
what an earlier run made before creating anything)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from closeloop.connectors.tryton.basics import accounts, ensure_country, one
from closeloop.connectors.tryton.rpc import TrytonRPC

if TYPE_CHECKING:
    from closeloop.connectors.tryton.setup import TrytonSetup

CHART_TEMPLATE = "Universal Chart of Accounts"


def entity_domain(code: str) -> list[Any]:
    """The domain of the company of legal entity ``code``: its party's ``code``, or, for a
    company adopted from the single-company version (Tryton never changes a party's code),
    an identifier of its party with no type and that code."""
    return [
        "OR",
        [["party.code", "=", code]],
        [["party.identifiers", "where", [["type", "=", None], ["code", "=", code]]]],
    ]


ENTITY_FIELDS = ["party", "party.code", "party.identifiers.type", "party.identifiers.code"]
"""What :func:`entity_code` reads of a company."""


def entity_code(row: dict[str, Any]) -> str:
    """The entity code of a ``company.company`` row read with :data:`ENTITY_FIELDS`: its
    party's identifier without type (an adopted company), else its party's code."""
    party = row.get("party.") or {}
    untyped = [i["code"] for i in party.get("identifiers.") or [] if not i.get("type")]
    return str(untyped[0] if untyped else party.get("code"))


def ensure_company(rpc: TrytonRPC, setup: TrytonSetup, currency: int) -> int:
    """The id of the company of entity ``setup.code`` (:func:`entity_domain`); else of one
    named like the entity whose party has no code of its own (a number from Tryton's party
    sequence: made by the single-company version), which gets an identifier without type
    holding the entity code; else of a new one whose party has that code, in ``currency``
    (an id). Raises ``ValueError`` when the company keeps its books in another currency
    than the entity's (Tryton cannot change it)."""
    fields = [*ENTITY_FIELDS, "currency.code"]
    rows = rpc.search_read("company.company", entity_domain(setup.code), fields)
    if not rows:
        named = rpc.search_read(
            "company.company", [["party.name", "=", setup.company_name]], fields
        )
        rows = [r for r in named if _no_code_of_its_own(r)]
        if rows:
            adopted = {"type": None, "code": setup.code}
            rpc.write("party.party", [rows[0]["party"]], {"identifiers": [["create", [adopted]]]})
    if rows:
        books = (rows[0].get("currency.") or {}).get("code")
        if books != setup.currency:
            raise ValueError(
                f"the Tryton company of {setup.code} keeps its books in {books}, the entity "
                f"says {setup.currency}: fix the configuration (Tryton cannot change it)"
            )
        return int(rows[0]["id"])
    country = ensure_country(rpc, setup.country)
    party = rpc.create(
        "party.party",
        [
            {
                "name": setup.company_name,
                "code": setup.code,
                "addresses": [["create", [{"country": country}]]],
            }
        ],
    )[0]
    return rpc.create("company.company", [{"party": party, "currency": currency}])[0]


def ensure_chart(rpc: TrytonRPC, company: int, receivable: str, payable: str) -> None:
    """Company ``company``'s chart of accounts from :data:`CHART_TEMPLATE`, and its default
    receivable and payable accounts (codes ``receivable``, ``payable``: company-dependent
    values of ``account.configuration``), each made when missing."""
    ctx = {"company": company}
    if one(rpc, "account.account", [["company", "=", company]]) is None:
        template = one(
            rpc, "account.account.template", [["name", "=", CHART_TEMPLATE], ["parent", "=", None]]
        )
        rpc.run_wizard(
            "account.create_chart",
            [
                ("start", {}),
                ("create_account", {"account": {"company": company, "account_template": template}}),
            ],
            extra_context=ctx,
        )
    defaults = rpc.search_read(
        "account.configuration", [], ["default_account_receivable"], context=ctx
    )
    if defaults and defaults[0].get("default_account_receivable"):
        return
    found = accounts(rpc, company, (receivable, payable))
    properties = {
        "company": company,
        "account_receivable": found[receivable],
        "account_payable": found[payable],
    }
    rpc.run_wizard(
        "account.create_chart",
        [("create_properties", {"properties": properties})],
        extra_context=ctx,
    )


def ensure_user(rpc: TrytonRPC, company: int) -> None:
    """The session's user works in ``company`` with the company filter "all"; ``company``
    becomes the current one when the user has none."""
    if not rpc.context:
        rpc.login()
    (user,) = rpc.search_read(
        "res.user", [["id", "=", rpc.uid]], ["companies", "company", "company_filter"]
    )
    values: dict[str, Any] = {}
    if company not in (user["companies"] or []):
        values["companies"] = [["add", [company]]]
    if user["company_filter"] != "all":
        values["company_filter"] = "all"
    if not user["company"]:
        values["company"] = company
    if values:
        rpc.write("res.user", [rpc.uid or 0], values)
        rpc.reload_context()


def ensure_fiscal_years(rpc: TrytonRPC, company: int, setup: TrytonSetup) -> None:
    """The setup's fiscal years of ``company``, each with its own move and invoice
    sequences (invoice numbers ``<entity code>/<year>/0001``) and monthly periods."""
    names = [str(y) for y in setup.fiscal_years]
    rows = rpc.search_read(
        "account.fiscalyear", [["company", "=", company], ["name", "in", names]], ["name"]
    )
    missing = [y for y in setup.fiscal_years if str(y) not in {r["name"] for r in rows}]
    if not missing:
        return
    types = {
        r["name"]: r["id"]
        for r in rpc.search_read(
            "ir.sequence.type", [["name", "in", ["Account Move", "Invoice"]]], ["name"]
        )
    }
    for year in missing:
        move_seq, invoice_seq = rpc.create(
            "ir.sequence.strict",
            [
                {
                    "name": f"{setup.code} moves {year}",
                    "sequence_type": types["Account Move"],
                    "company": company,
                },
                {
                    "name": f"{setup.code} invoices {year}",
                    "sequence_type": types["Invoice"],
                    "company": company,
                    "prefix": f"{setup.code}/{year}/",
                    "padding": 4,
                },
            ],
        )
        sequences = {
            f"{kind}_{doc}_sequence": invoice_seq
            for kind in ("out", "in")
            for doc in ("invoice", "credit_note")
        }
        fiscal_year = rpc.create(
            "account.fiscalyear",
            [
                {
                    "name": str(year),
                    "start_date": date(year, 1, 1),
                    "end_date": date(year, 12, 31),
                    "company": company,
                    "move_sequence": move_seq,
                    "invoice_sequences": [["create", [{"company": company, **sequences}]]],
                }
            ],
        )[0]
        rpc.call("account.fiscalyear", "create_period", [fiscal_year])


def ensure_product(rpc: TrytonRPC, company: int, setup: TrytonSetup, category: int) -> None:
    """The shared service product, with its list price in ``company`` (a company-dependent
    value)."""
    ctx = {"company": company}
    rows = rpc.search_read(
        "product.template",
        [["name", "=", setup.service_name]],
        ["list_price", "products"],
        limit=1,
        context=ctx,
    )
    if not rows:
        hour = one(rpc, "product.uom", [["symbol", "=", "h"]])
        rpc.create(
            "product.template",
            [
                {
                    "name": setup.service_name,
                    "type": "service",
                    "default_uom": hour,
                    "list_price": setup.service_list_price,
                    "account_category": category,
                    "products": [["create", [{}]]],
                }
            ],
            context=ctx,
        )
    elif rows[0]["list_price"] is None:
        rpc.write(
            "product.template",
            [rows[0]["id"]],
            {"list_price": setup.service_list_price},
            context=ctx,
        )


def _no_code_of_its_own(row: dict[str, Any]) -> bool:
    """Whether a company row's party has only a code Tryton's party sequence gave (digits)
    and no entity code of its own."""
    party = row.get("party.") or {}
    untyped = [i for i in party.get("identifiers.") or [] if not i.get("type")]
    return not untyped and (not party.get("code") or str(party["code"]).isdigit())
