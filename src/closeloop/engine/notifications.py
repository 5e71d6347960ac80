"""Notifications of objects no flow is bound to: acknowledged, never stored, never silent.

A vendor's webhook may notify the hub of objects it does not handle (a rule in the vendor's
setup sends more than the hub's bindings take). Refusing them would make the vendor resend
them for a day; taking them silently hides a misconfiguration. So each one is acknowledged
and:

- counted in ``closeloop_notifications_ignored_total{system, object}``, where ``object`` is
  the name only when the connector knows it (a bounded list), else :data:`OTHER`: a sender
  cannot grow ``/metrics`` by inventing names;
- logged (``notification_ignored``);
- recorded once per name in the audit trail (entity ``ignored-notifications:<system>``,
  action :data:`IGNORED_ACTION`, detail ``{"object", "hint"}``), at most
  :data:`MAX_NAMES` names per system, each a plausible object name (else :data:`OTHER`), so
  that ``closeloop check`` can warn about them (:func:`ignored_objects`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection

import structlog

from closeloop.engine.metrics import EngineMetrics
from closeloop.ports.clock import Clock
from closeloop.ports.store import AuditEntry, Store

log = structlog.get_logger(__name__)

IGNORED_ACTION = "notification_ignored"
OTHER = "(other)"
MAX_NAMES = 50
"""Distinct ignored object names recorded per system (the audit trail stays bounded)."""
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")


def ignored_entity(system: str) -> str:
    """The audit entity under which ``system``'s ignored object names are recorded."""
    return f"ignored-notifications:{system}"


def ignored_objects(store: Store, system: str) -> list[AuditEntry]:
    """The recorded ignored object names of ``system``, oldest first (one entry per name;
    ``detail["object"]``, ``detail["hint"]``)."""
    with store.transaction() as tx:
        entries = tx.list_audit(ignored_entity(system), MAX_NAMES * 4)
    unique: dict[str, AuditEntry] = {}
    for entry in reversed(entries):
        unique.setdefault(str(entry.detail.get("object")), entry)
    return list(unique.values())


class IgnoredNotifications:
    """Counts, logs and records ignored notifications (module docstring); safe to share
    between the HTTP server's threads."""

    def __init__(self, store: Store, clock: Clock, metrics: EngineMetrics) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self._lock = threading.Lock()
        self._recorded: dict[str, set[str]] = {}

    def record(
        self, system: str, object_name: str, known: Collection[str], hint: str, count: int = 1
    ) -> None:
        """``count`` notifications of ``system``'s ``object_name``, which no flow is bound
        to. ``known``: the object names the connector knows (the metric's label values);
        ``hint``: what a person does about it (bind the object, or change the vendor's
        rule), kept for ``closeloop check``."""
        label = object_name if object_name in known else OTHER
        self.metrics.notifications_ignored.labels(system, label).inc(count)
        name = object_name if _NAME.fullmatch(object_name) else OTHER
        log.warning(
            "notification_ignored",
            system=system,
            object=name,
            count=count,
            hint=hint,
        )
        with self._lock:
            recorded = self._recorded.get(system)
            if recorded is None:
                entries = ignored_objects(self.store, system)
                recorded = {str(e.detail.get("object")) for e in entries}
                self._recorded[system] = recorded
            if name in recorded or len(recorded) >= MAX_NAMES:
                return
            entry = AuditEntry(
                self.clock.now(),
                "hub",
                IGNORED_ACTION,
                ignored_entity(system),
                {"object": name, "hint": hint},
                None,
            )
            with self.store.transaction() as tx:
                tx.audit([entry])
            recorded.add(name)
