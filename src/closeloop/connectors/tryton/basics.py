"""Reference records every company of a Tryton database shares, looked up or made from the
ISO standards (currencies, countries), and small lookups the setup steps use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pycountry

from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.money import minor_unit


def one(
    rpc: TrytonRPC, model: str, domain: list[Any], context: Mapping[str, Any] | None = None
) -> int | None:
    """The id of the first ``model`` record matching ``domain``, or ``None``."""
    rows = rpc.search_read(model, domain, ["id"], limit=1, context=context)
    return int(rows[0]["id"]) if rows else None


def ensure_currency(rpc: TrytonRPC, code: str) -> int:
    """The id of currency ``code``, created from ISO 4217 when missing."""
    return ensure_currencies(rpc, [code])[code]


def ensure_currencies(rpc: TrytonRPC, codes: Sequence[str]) -> dict[str, int]:
    """Ids of currencies ``codes`` (ISO 4217), the missing ones created in one call. Raises
    ``ValueError`` for a code that is not ISO 4217."""
    wanted = sorted(set(codes))
    rows = rpc.search_read("currency.currency", [["code", "in", wanted]], ["code"])
    found = {str(r["code"]): int(r["id"]) for r in rows}
    missing = [c for c in wanted if c not in found]
    if missing:
        values = []
        for code in missing:
            record = pycountry.currencies.get(alpha_3=code)
            digits = minor_unit(code)
            values.append(
                {
                    "name": record.name if record else code,
                    "code": code,
                    "symbol": code,
                    "rounding": Decimal(1).scaleb(-digits),
                    "digits": digits,
                }
            )
        found.update(zip(missing, rpc.create("currency.currency", values), strict=True))
    return found


def ensure_country(rpc: TrytonRPC, alpha_2: str) -> int:
    """The id of country ``alpha_2``, created from ISO 3166 when missing."""
    found = one(rpc, "country.country", [["code", "=", alpha_2]])
    if found:
        return found
    record = pycountry.countries.get(alpha_2=alpha_2)
    if record is None:
        raise ValueError(f"{alpha_2!r} is not an ISO 3166 country code")
    return rpc.create(
        "country.country",
        [{"name": record.name, "code": alpha_2, "code3": record.alpha_3}],
    )[0]


def accounts(rpc: TrytonRPC, company: int, codes: Sequence[str]) -> dict[str, int]:
    """Account ids of company ``company`` by code, in one read. Raises ``LookupError``
    naming the codes its chart lacks."""
    rows = rpc.search_read(
        "account.account", [["company", "=", company], ["code", "in", list(codes)]], ["code"]
    )
    found = {str(r["code"]): int(r["id"]) for r in rows}
    missing = [c for c in codes if c not in found]
    if missing:
        raise LookupError(
            f"account {', '.join(missing)} is missing from the chart of company {company}"
        )
    return found
