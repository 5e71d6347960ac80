"""Evaluating the rules on a schedule and notifying each condition once.

Every ``every_s`` seconds the hub that holds the evaluator's claim (a row of the alert
state: with several hubs on one database, one evaluates and sends, another takes over when
its claim runs out) evaluates the rules (:func:`~closeloop.alerts.conditions.evaluate`) and
compares them with the stored conditions:

- a condition that starts firing is owed to every channel;
- one still firing is owed again only when ``renotify_h`` passed since it was last sent;
- one no longer firing is cleared (what it still owed is dropped); firing again later, it
  is notified again.

Each owed channel is sent to once; a channel that fails is logged and skipped for the rest
of the evaluation (it blocks no other channel) and stays owed, so it is retried at the next
evaluation. The state is written before sending, so a hub that dies mid-send may repeat one
notification (at least once), never lose one. The daily digest is a claim's slot: sent
once per day at ``digest_at_utc`` with what is firing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta

import structlog

from closeloop.alerts import messages
from closeloop.alerts.channels import ChannelError, Notification, Sender
from closeloop.alerts.conditions import Condition, Readings, evaluate
from closeloop.alerts.settings import AlertsConfig
from closeloop.ports.alerts import AlertState, AlertStore
from closeloop.ports.clock import Clock

log = structlog.get_logger(__name__)
EVALUATOR = "evaluator"
DIGEST = "digest"
MIN_LEASE_S = 300.0


@dataclass(frozen=True)
class AlertsOverview:
    """What the console shows: ``channels`` (name, where it sends), ``rules`` (in words),
    ``firing`` and recently ``cleared`` conditions, the digest time and when the last one
    was due (``last_digest``), how often rules are evaluated (``every_s``) and who holds
    the evaluator's claim (``evaluator``; ``None`` before the first evaluation)."""

    channels: list[tuple[str, str]]
    rules: list[str]
    firing: list[AlertState]
    cleared: list[AlertState]
    digest_at_utc: time | None
    last_digest: datetime | None
    every_s: float
    evaluator: str | None


@dataclass(frozen=True)
class Outcome:
    """What one evaluation did: whether this hub ``evaluated`` (it held the claim), the
    condition keys ``firing``, the ``sent`` and ``failed`` deliveries as
    ``(condition key or "digest", channel)``."""

    evaluated: bool
    firing: tuple[str, ...] = ()
    sent: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


class Alerter:
    """Evaluates ``config.rules`` over ``readings`` and notifies through ``senders``, keeping
    the state in ``store``; ``holder`` names this hub process in the evaluator's claim."""

    def __init__(
        self,
        config: AlertsConfig,
        readings: Readings,
        store: AlertStore,
        senders: Sequence[Sender],
        clock: Clock,
        holder: str,
    ) -> None:
        self.config = config
        self.readings = readings
        self.store = store
        self.senders = {s.name: s for s in senders}
        self.clock = clock
        self.holder = holder
        self.lease = timedelta(seconds=max(MIN_LEASE_S, 3 * config.every_s))

    def run(self, stop: threading.Event) -> None:
        """Evaluate every ``every_s`` seconds until ``stop`` is set (``every_s`` 0 or no
        rules and no digest: return at once). An evaluation that fails is logged."""
        if not self.enabled:
            return
        while not stop.is_set():
            try:
                self.run_due()
            except Exception:
                log.exception("alert evaluation failed")
            stop.wait(self.config.every_s)

    @property
    def enabled(self) -> bool:
        """Whether there is anything to evaluate: ``every_s`` above 0 and rules or a digest."""
        return self.config.every_s > 0 and bool(self.config.rules.describe() or self.digest_on)

    def release(self) -> None:
        """Give up the evaluator's claim if this hub holds it (a stopping hub, or the end of
        ``closeloop run --once``), so that another hub or the next pass evaluates at once
        instead of after the claim's lease."""
        now = self.clock.now()
        self.store.claim(EVALUATOR, self.holder, now, now)  # held until now: free

    @property
    def digest_on(self) -> bool:
        """Whether a daily digest is configured."""
        return self.config.digest_at_utc is not None

    def run_due(self) -> Outcome:
        """One evaluation, if this hub holds (or takes) the evaluator's claim."""
        now = self.clock.now()
        if not self.store.claim(EVALUATOR, self.holder, now, now + self.lease):
            return Outcome(False)
        current = evaluate(self.config.rules, self.readings, now)
        states = self._transition({s.key: s for s in self.store.states()}, current, now)
        self.store.save_states(list(states.values()))
        sent: list[tuple[str, str]] = []
        failed: list[tuple[str, str]] = []
        down: set[str] = set()
        delivered = []
        for state in states.values():
            if not state.owed:
                continue
            again = now - state.since >= timedelta(hours=self.config.renotify_h)
            note = messages.alert(state, now, again)
            left = self._deliver(state.key, note, state.owed, down, sent, failed)
            ok = len(left) < len(state.owed)
            delivered.append(replace(state, owed=left, sent_at=now if ok else state.sent_at))
        self.store.save_states(delivered)
        self._digest(now, down, sent, failed)
        return Outcome(True, tuple(c.key for c in current), tuple(sent), tuple(failed))

    def _transition(
        self, known: dict[str, AlertState], current: Sequence[Condition], now: datetime
    ) -> dict[str, AlertState]:
        """The states that change at ``now``: new and refreshed conditions, cleared ones."""
        every = tuple(self.senders)
        renotify = timedelta(hours=self.config.renotify_h)
        changed: dict[str, AlertState] = {}
        for c in current:
            old = known.get(c.key)
            if old is None or not old.firing:
                changed[c.key] = AlertState(
                    c.key,
                    c.rule,
                    c.summary,
                    c.detail,
                    True,
                    now,
                    now,
                    old.sent_at if old else None,
                    every,
                    old.cleared_at if old else None,
                )
                continue
            owed = old.owed
            if not owed and old.sent_at is not None and now - old.sent_at >= renotify:
                owed = every
            changed[c.key] = replace(
                old, summary=c.summary, detail=c.detail, seen_at=now, owed=owed
            )
        firing_now = {c.key for c in current}
        for key, old in known.items():
            if old.firing and key not in firing_now:
                changed[key] = replace(old, firing=False, owed=(), cleared_at=now)
        return changed

    def _deliver(
        self,
        what: str,
        note: Notification,
        owed: Sequence[str],
        down: set[str],
        sent: list[tuple[str, str]],
        failed: list[tuple[str, str]],
    ) -> tuple[str, ...]:
        """Send ``note`` to each ``owed`` channel not ``down``; the channels still owed."""
        left = []
        for name in owed:
            sender = self.senders.get(name)
            if sender is None:  # a channel removed from the configuration owes nothing
                continue
            if name in down:
                left.append(name)
                continue
            try:
                sender.send(note)
            except ChannelError as exc:
                log.warning(
                    "alert not delivered; retried at the next evaluation",
                    channel=name,
                    what=what,
                    error=str(exc),
                )
                down.add(name)
                failed.append((what, name))
                left.append(name)
            else:
                log.info("alert sent", channel=name, what=what)
                sent.append((what, name))
        return tuple(left)

    def digest_slot(self, now: datetime) -> datetime | None:
        """The latest digest time at or before ``now`` (``None``: no digest)."""
        at = self.config.digest_at_utc
        if at is None:
            return None
        slot = datetime.combine(now.date(), at.replace(tzinfo=None), UTC)
        return slot if slot <= now else slot - timedelta(days=1)

    def _digest(
        self,
        now: datetime,
        down: set[str],
        sent: list[tuple[str, str]],
        failed: list[tuple[str, str]],
    ) -> None:
        slot = self.digest_slot(now)
        if slot is None:
            return
        claim = self.store.get_claim(DIGEST)
        if claim is None or claim.slot is None:  # first sight: the next slot is the first
            self.store.set_claim_slot(DIGEST, slot, ())
            return
        if claim.slot < slot:
            owed: Sequence[str] = tuple(self.senders)
        elif claim.owed:
            owed = claim.owed
        else:
            return
        self.store.set_claim_slot(DIGEST, slot, owed)  # due: recorded before sending
        states = self.store.states()
        firing = [s for s in states if s.firing]
        since = slot - timedelta(days=1)
        cleared = [s for s in states if not s.firing and s.cleared_at and s.cleared_at > since]
        note = messages.digest(firing, cleared, now)
        left = self._deliver(DIGEST, note, owed, down, sent, failed)
        self.store.set_claim_slot(DIGEST, slot, left)

    def test(self) -> dict[str, str | None]:
        """Send a test notification to every channel now: by channel, ``None`` when it was
        accepted, else why not."""
        results: dict[str, str | None] = {}
        for name, sender in self.senders.items():
            try:
                sender.send(messages.test_note(name, self.clock.now()))
            except ChannelError as exc:
                results[name] = str(exc)
            else:
                results[name] = None
        return results

    def overview(self) -> AlertsOverview:
        """What is configured and firing now (:class:`AlertsOverview`)."""
        states = self.store.states()
        now = self.clock.now()
        digest = self.store.get_claim(DIGEST)
        evaluator = self.store.get_claim(EVALUATOR)
        return AlertsOverview(
            [(name, s.describe()) for name, s in self.senders.items()],
            self.config.rules.describe(),
            [s for s in states if s.firing],
            [
                s
                for s in states
                if not s.firing and s.cleared_at and now - s.cleared_at < timedelta(days=7)
            ],
            self.config.digest_at_utc,
            digest.slot if digest else None,
            self.config.every_s,
            evaluator.holder if evaluator and evaluator.holder else None,
        )

    def close(self) -> None:
        """Close the channels' connections."""
        for sender in self.senders.values():
            close = getattr(sender, "close", None)
            if callable(close):
                close()
