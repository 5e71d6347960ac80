"""Billing periods: the calendar slices a project is invoiced by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum


class PeriodKind(StrEnum):
    """How often a project is invoiced."""

    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """One period: ``label`` (``2026-W35``, ``2026-08``, ``2026-Q3``), first and last day."""

    label: str
    start: date
    end: date


def period_of(day: date, kind: PeriodKind) -> BillingPeriod:
    """The period of ``kind`` that contains ``day`` (weeks are ISO 8601 weeks, Monday first)."""
    if kind is PeriodKind.WEEKLY:
        year, week, weekday = day.isocalendar()
        start = day - timedelta(days=weekday - 1)
        return BillingPeriod(f"{year}-W{week:02d}", start, start + timedelta(days=6))
    if kind is PeriodKind.MONTHLY:
        start = day.replace(day=1)
        return BillingPeriod(f"{day:%Y-%m}", start, _next_month(start) - timedelta(days=1))
    quarter = (day.month - 1) // 3
    start = date(day.year, 3 * quarter + 1, 1)
    end = _next_month(_next_month(_next_month(start))) - timedelta(days=1)
    return BillingPeriod(f"{day.year}-Q{quarter + 1}", start, end)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)
