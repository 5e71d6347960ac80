"""The alert state (:class:`~closeloop.ports.alerts.AlertStore`) on the hub's database: the
``alert_conditions`` and ``alert_claims`` tables. A claim is taken by one conditional UPDATE
(holder is me, or the previous holder's time ran out), atomic on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from closeloop.ports.alerts import AlertState, Claim
from closeloop.store.tables import alert_claims, alert_conditions


class SqlAlertStore:
    """:class:`~closeloop.ports.alerts.AlertStore` on ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, name: str, holder: str, now: datetime, until: datetime) -> bool:
        """See :meth:`~closeloop.ports.alerts.AlertStore.claim`."""
        c = alert_claims.c
        with self.engine.begin() as conn:
            conn.execute(
                _insert(conn)(alert_claims)
                .values(name=name, holder="", until=now, owed=[])
                .on_conflict_do_nothing()
            )
            taken = conn.execute(
                alert_claims.update()
                .where(c.name == name, sa.or_(c.holder == holder, c.until <= now))
                .values(holder=holder, until=until)
            )
            return taken.rowcount == 1

    def get_claim(self, name: str) -> Claim | None:
        """See :meth:`~closeloop.ports.alerts.AlertStore.get_claim`."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(alert_claims).where(alert_claims.c.name == name)).first()
        if row is None:
            return None
        return Claim(row.name, row.holder, row.until, row.slot, tuple(row.owed))

    def set_claim_slot(self, name: str, slot: datetime | None, owed: Sequence[str]) -> None:
        """See :meth:`~closeloop.ports.alerts.AlertStore.set_claim_slot`."""
        with self.engine.begin() as conn:
            conn.execute(
                _insert(conn)(alert_claims)
                .values(name=name, holder="", until=datetime.min.replace(tzinfo=UTC), owed=[])
                .on_conflict_do_nothing()
            )
            conn.execute(
                alert_claims.update()
                .where(alert_claims.c.name == name)
                .values(slot=slot, owed=list(owed))
            )

    def states(self) -> list[AlertState]:
        """See :meth:`~closeloop.ports.alerts.AlertStore.states`."""
        c = alert_conditions.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(alert_conditions).order_by(c.firing.desc(), c.key))
            return [
                AlertState(
                    r.key,
                    r.rule,
                    r.summary,
                    dict(r.detail),
                    r.firing,
                    r.since,
                    r.seen_at,
                    r.sent_at,
                    tuple(r.owed),
                    r.cleared_at,
                )
                for r in rows
            ]

    def save_states(self, states: Sequence[AlertState]) -> None:
        """See :meth:`~closeloop.ports.alerts.AlertStore.save_states`."""
        if not states:
            return
        keys = [s.key for s in states]
        with self.engine.begin() as conn:
            conn.execute(alert_conditions.delete().where(alert_conditions.c.key.in_(keys)))
            conn.execute(alert_conditions.insert(), [_row(s) for s in states])


def _row(s: AlertState) -> dict[str, Any]:
    return {
        "key": s.key,
        "rule": s.rule,
        "summary": s.summary,
        "detail": s.detail,
        "firing": s.firing,
        "since": s.since,
        "seen_at": s.seen_at,
        "sent_at": s.sent_at,
        "owed": list(s.owed),
        "cleared_at": s.cleared_at,
    }


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT (with ``on_conflict_do_nothing``)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
