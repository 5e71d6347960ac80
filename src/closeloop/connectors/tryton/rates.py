"""Exchange rates in Tryton: ``currency.currency.rate`` rows (currency, date, rate), shared
by every company of the database.

Tryton converts an amount from one currency to another through both currencies' rates on
the date (the latest on or before it): a rate is the number of units of the currency for one
unit of a common base, which has rate 1
(:meth:`~closeloop.domain.entities.RatesConfig.all_rates` adds it). Tryton refuses to post
an invoice in a foreign currency without a rate of both the invoice's and the company's
currency on or before the invoice date; the hub never makes a rate up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from closeloop.connectors.tryton.basics import ensure_currencies
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.domain.entities import ExchangeRate
from closeloop.domain.errors import ConflictError, InputError

RATE_DECIMALS = 6
"""The decimals Tryton keeps of a rate (its ``rate_decimal`` setting's default)."""


class RateConflictError(ConflictError):
    """Tryton already has a different rate for a currency on a date: the message names
    both; nothing was loaded."""


def load_rates(rpc: TrytonRPC, rates: Sequence[ExchangeRate]) -> int:
    """Create the rates Tryton lacks, by (currency, date), in one call; returns how many.
    Currencies Tryton lacks are made first (ISO 4217). Three calls at most (currencies,
    existing rates, create); loading the same rates again creates nothing.

    Raises :class:`RateConflictError` when Tryton holds a different rate for a currency on
    a date (or the input gives two), naming both: a rate is never overwritten silently;
    :class:`~closeloop.domain.errors.InputError` for a rate with more than
    :data:`RATE_DECIMALS` decimals. Nothing is loaded then.
    """
    wanted: dict[tuple[str, date], ExchangeRate] = {}
    for rate in rates:
        value = rate.rate.normalize()
        if -value.as_tuple().exponent > RATE_DECIMALS:  # type: ignore[operator]
            raise InputError(
                f"the {rate.currency} rate {rate.rate} of {rate.valid_from} ({rate.source}) has "
                f"more than the {RATE_DECIMALS} decimals Tryton keeps: round it at the source"
            )
        key = (rate.currency, rate.valid_from)
        if key in wanted and wanted[key].rate != rate.rate:
            raise RateConflictError(_conflict(wanted[key], rate.rate, "the same load"))
        wanted.setdefault(key, rate)
    if not wanted:
        return 0
    currencies = ensure_currencies(rpc, sorted({c for c, _ in wanted}))
    rows = rpc.search_read(
        "currency.currency.rate",
        [
            ["currency", "in", sorted(currencies.values())],
            ["date", "in", sorted({d for _, d in wanted})],
        ],
        ["currency.code", "date", "rate"],
    )
    existing: dict[tuple[str, date], Decimal] = {
        (str((r.get("currency.") or {}).get("code")), r["date"]): r["rate"] for r in rows
    }
    conflicts = [
        _conflict(rate, existing[key], "Tryton")
        for key, rate in sorted(wanted.items())
        if key in existing and existing[key] != rate.rate
    ]
    if conflicts:
        raise RateConflictError("; ".join(conflicts) + ": nothing loaded")
    new = [
        {"currency": currencies[r.currency], "date": r.valid_from, "rate": r.rate}
        for key, r in sorted(wanted.items())
        if key not in existing
    ]
    if new:
        rpc.create("currency.currency.rate", new)
    return len(new)


def _conflict(rate: ExchangeRate, other: Decimal, where: str) -> str:
    return (
        f"{rate.currency} on {rate.valid_from.isoformat()}: {where} has the rate {other}, "
        f"the load says {rate.rate} ({rate.source}); correct one of them (a rate is never "
        "overwritten)"
    )


def rate_dates(
    rpc: TrytonRPC, currencies: Sequence[str], until: date
) -> dict[str, tuple[int, date]]:
    """Each of ``currencies`` (ISO codes) that has a rate on or before ``until``: its id
    and earliest rate date, in one read. A rate on or before a date ``d <= until`` exists
    exactly when the earliest is on or before ``d``."""
    rows = rpc.search_read(
        "currency.currency.rate",
        [["currency.code", "in", sorted(set(currencies))], ["date", "<=", until]],
        ["currency", "currency.code", "date"],
    )
    earliest: dict[str, tuple[int, date]] = {}
    for row in rows:
        code = str((row.get("currency.") or {}).get("code"))
        if code not in earliest or row["date"] < earliest[code][1]:
            earliest[code] = (int(row["currency"]), row["date"])
    return earliest
