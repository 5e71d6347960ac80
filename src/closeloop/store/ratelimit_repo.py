"""The shared rate limit on the hub's database: one row per key with the send times of the
requests inside the window, read and written under a row lock (PostgreSQL ``FOR UPDATE``;
SQLite serialises writers with ``BEGIN IMMEDIATE``).

Send times are the workers' wall clocks (``time.time()``): machines sharing a limit must keep
their clocks in step (NTP), as they must for the lease times anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import Engine

from closeloop.store.tables import rate_windows


class SqlSharedRateLimit:
    """:class:`~closeloop.ports.ratelimit.SharedRateLimit` on ``engine``."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def take(self, key: str, requests_per_window: int, window_s: float) -> tuple[float, float]:
        """See :meth:`~closeloop.ports.ratelimit.SharedRateLimit.take`."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
            conn.execute(insert(rate_windows).values(key=key, sent=[]).on_conflict_do_nothing())
            query = sa.select(rate_windows.c.sent).where(rate_windows.c.key == key)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            now = self.clock()
            sent = [t for t in conn.execute(query).scalar_one() if t > now - window_s]
            if len(sent) >= requests_per_window:
                return max(0.001, float(min(sent)) + window_s - now), 0.0
            sent.append(now)
            conn.execute(rate_windows.update().where(rate_windows.c.key == key).values(sent=sent))
            return 0.0, now

    def used(self, key: str, window_s: float) -> int:
        """Requests sent under ``key`` within the last ``window_s`` seconds (all workers)."""
        with self.engine.connect() as conn:
            query = sa.select(rate_windows.c.sent).where(rate_windows.c.key == key)
            sent = conn.execute(query).scalar_one_or_none() or []
        now = self.clock()
        return sum(1 for t in sent if t > now - window_s)

    def settle(self, key: str, stamp: float) -> None:
        """See :meth:`~closeloop.ports.ratelimit.SharedRateLimit.settle`."""
        with self.engine.begin() as conn:
            query = sa.select(rate_windows.c.sent).where(rate_windows.c.key == key)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            sent = list(conn.execute(query).scalar_one_or_none() or [])
            if stamp in sent:
                sent[sent.index(stamp)] = max(stamp, self.clock())
                update = rate_windows.update().where(rate_windows.c.key == key)
                conn.execute(update.values(sent=sent))
