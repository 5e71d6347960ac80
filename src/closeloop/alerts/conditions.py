"""The conditions the rules raise now, from what the hub can read (:class:`Readings`).

Each rule gives at most one condition per key, however many exceptions, systems' calls or
drifts are behind it: ``open_exceptions``, ``sla:<impact>``, ``breaker:<system>``,
``quota:<system>``, ``drift``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from closeloop.alerts.settings import AlertRules
from closeloop.domain.commands import Impact
from closeloop.ports.store import ExceptionQuery, ExceptionRow, ReconcileRun
from closeloop.reconcile.run import drift_total

EXAMPLES = 5
"""Entities named in an SLA condition's detail."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition firing now: ``key`` (stable while it fires), ``rule``, a one-line
    ``summary`` and structured ``detail`` (JSON-able)."""

    key: str
    rule: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Readings:
    """What the rules read, each a call made at evaluation time:
    ``open_by_class()``: open business exceptions by class; ``find_exceptions(query)``;
    ``breakers_open_s()``: seconds each system's breaker has been open without closing
    (only systems whose breaker is open or half-open, in this process); ``quota_left()``:
    the fraction 0-1 of each system's quota left (``None``: unknown or no quota);
    ``latest_run()``: the newest reconciliation run, or ``None``."""

    open_by_class: Callable[[], Mapping[str, int]]
    find_exceptions: Callable[[ExceptionQuery], list[ExceptionRow]]
    breakers_open_s: Callable[[], Mapping[str, float]]
    quota_left: Callable[[], Mapping[str, float | None]]
    latest_run: Callable[[], ReconcileRun | None]


def evaluate(rules: AlertRules, readings: Readings, now: datetime) -> list[Condition]:
    """The conditions ``rules`` raise at ``now`` (aware UTC), in rule order."""
    found: list[Condition] = []
    if rules.open_exceptions_above is not None:
        by_class = dict(readings.open_by_class())
        total = sum(by_class.values())
        if total > rules.open_exceptions_above:
            found.append(
                Condition(
                    "open_exceptions",
                    "open_exceptions",
                    f"{total} open business exceptions (threshold {rules.open_exceptions_above})",
                    {"open": total, "threshold": rules.open_exceptions_above, "by_class": by_class},
                )
            )
    for impact, hours in rules.sla_h.items():
        found.extend(_sla(impact, hours, readings, now))
    if rules.breaker_open_min is not None:
        limit_s = rules.breaker_open_min * 60
        for system, open_s in sorted(readings.breakers_open_s().items()):
            if open_s >= limit_s:
                found.append(
                    Condition(
                        f"breaker:{system}",
                        "breaker",
                        f"{system}: circuit breaker open for {open_s / 60:.0f} min "
                        f"(limit {rules.breaker_open_min:g} min): calls to it are paused",
                        {
                            "system": system,
                            "open_s": round(open_s),
                            "limit_min": rules.breaker_open_min,
                        },
                    )
                )
    if rules.quota_left_below is not None:
        for system, left in sorted(readings.quota_left().items()):
            if left is not None and round(left, 9) < rules.quota_left_below:
                found.append(
                    Condition(
                        f"quota:{system}",
                        "quota",
                        f"{system}: {left:.0%} of its quota left "
                        f"(alert below {rules.quota_left_below:.0%})",
                        {"system": system, "left": round(left, 4), "below": rules.quota_left_below},
                    )
                )
    if rules.drift:
        run = readings.latest_run()
        drifts = drift_total(run) if run is not None else 0
        if run is not None and drifts:
            found.append(
                Condition(
                    "drift",
                    "drift",
                    f"reconciliation run {run.id} found {drifts} drift(s)",
                    {"run": run.id, "drifts": drifts, "counts": run.counts},
                )
            )
    return found


def _sla(impact: Impact, hours: float, readings: Readings, now: datetime) -> list[Condition]:
    late = readings.find_exceptions(
        ExceptionQuery(impact=impact, created_before=now - timedelta(hours=hours), limit=1000)
    )
    if not late:
        return []
    late.sort(key=lambda r: (r.created_at, r.id))
    oldest = late[0]
    age_h = (now - oldest.created_at).total_seconds() / 3600
    count = f"{len(late)}+" if len(late) >= 1000 else str(len(late))
    return [
        Condition(
            f"sla:{impact.value}",
            "sla",
            f"{count} exception(s) of {impact.value} impact open longer than {hours:g} h "
            f"(oldest {age_h:.0f} h: {oldest.entity})",
            {
                "impact": impact.value,
                "sla_h": hours,
                "late": len(late),
                "oldest_h": round(age_h, 1),
                "examples": [
                    {"id": r.id, "entity": r.entity, "message": r.message} for r in late[:EXAMPLES]
                ],
            },
        )
    ]
