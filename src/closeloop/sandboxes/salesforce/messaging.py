"""Outbound Messages: workflow rules that send the SOAP notification envelope to an endpoint
and retry until it answers with an Ack.

As in Salesforce (Help, "Outbound Messaging"): a rule names an object, a condition, the fields
to send and an endpoint URL; it fires when a record is created or edited and the condition
holds (evaluation "created, and every time it's edited"). Notifications are queued durably,
sent in messages of up to 100 per rule, and a message that is not acknowledged is retried
with exponential backoff (Salesforce: up to two hours apart, for 24 hours); notifications
may repeat and may arrive out of order, so receivers must be idempotent.
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from closeloop.sandboxes.salesforce import soql
from closeloop.sandboxes.salesforce.outbound import envelope, is_ack
from closeloop.sandboxes.salesforce.records import SalesforceError

MAX_PER_MESSAGE = 100
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, notification_id TEXT NOT NULL,
    sobject TEXT NOT NULL, fields TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT);
"""


@dataclass(frozen=True)
class OutboundRule:
    """A workflow rule with an outbound-message action.

    ``condition``: a SOQL ``WHERE`` expression over the object's fields (empty: always).
    ``fields``: the fields sent (``Id`` always is). ``action_id``: the action's id, sent as
    ``ActionId``.
    """

    name: str
    object: str
    endpoint_url: str
    fields: tuple[str, ...] = ("Id",)
    condition: str = ""
    action_id: str = field(default_factory=lambda: "04k5g" + uuid.uuid4().hex[:13].upper())

    def parsed_condition(self) -> Any:
        """The condition as a parsed SOQL ``WHERE``; raises :class:`SalesforceError`."""
        if not self.condition.strip():
            return None
        try:
            return soql.parse(f"SELECT Id FROM {self.object} WHERE {self.condition}").where
        except soql.MalformedQuery as exc:
            raise SalesforceError(400, "MALFORMED_QUERY", f"rule {self.name}: {exc}") from None


@dataclass
class Messenger:
    """Queues notifications of matching writes and delivers them from a background thread.

    ``retry_base_s`` doubles per failed attempt up to ``retry_max_s``; ``verify`` is the TLS
    setting for HTTPS endpoints (a context trusting the endpoint's CA, or ``True`` for the
    system's).
    """

    path: Path
    organization_id: str
    instance_url: str
    retry_base_s: float = 15.0
    retry_max_s: float = 7200.0
    timeout_s: float = 10.0
    verify: ssl.SSLContext | bool = True
    rules: list[OutboundRule] = field(default_factory=list)
    delivered: int = 0

    def __post_init__(self) -> None:
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conditions: dict[str, Any] = {}

    def set_rules(self, rules: list[OutboundRule]) -> None:
        """Replace the rules (conditions are checked first; raises :class:`SalesforceError`)."""
        conditions = {r.name: r.parsed_condition() for r in rules}
        with self._lock:
            self.rules, self._conditions = list(rules), conditions

    def describe_rules(self) -> list[dict[str, Any]]:
        """The rules as JSON."""
        return [asdict(r) for r in self.rules]

    def on_write(self, sobject: str, record: dict[str, Any]) -> None:
        """Queue a notification for each rule of ``sobject`` whose condition ``record`` meets."""
        queued = []
        with self._lock:
            for rule in self.rules:
                if rule.object != sobject or not soql.matches(self._conditions[rule.name], record):
                    continue
                fields = {"Id": record["Id"]}
                fields.update({f: record.get(f) for f in rule.fields if f != "Id"})
                nid = "04l5g" + uuid.uuid4().hex[:13].upper()
                queued.append((rule.name, nid, sobject, json.dumps(fields), time.time()))
            if queued:
                self._db.executemany(
                    "INSERT INTO outbound (rule, notification_id, sobject, fields, next_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    queued,
                )
        if queued:
            self._wake.set()

    def pending(self) -> int:
        """Notifications not yet acknowledged."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbound").fetchone()[0])

    def start(self) -> None:
        """Start delivering in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="outbound-messages", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the delivery thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, verify=self.verify) as client:
            while not self._stop.is_set():
                delay = self.deliver_due(client)
                self._wake.wait(timeout=delay)
                self._wake.clear()

    def deliver_due(self, client: httpx.Client) -> float:
        """Send every due message once; returns seconds until the next one is due."""
        rules = {r.name: r for r in self.rules}
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, rule, notification_id, sobject, fields, attempts FROM outbound "
                "WHERE next_at <= ? ORDER BY seq",
                (now,),
            ).fetchall()
        by_rule: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_rule.setdefault(row[1], []).append(row)
        for name, items in by_rule.items():
            rule = rules.get(name)
            for start in range(0, len(items), MAX_PER_MESSAGE):
                self._send(client, rule, items[start : start + MAX_PER_MESSAGE])
        with self._lock:
            following = self._db.execute("SELECT min(next_at) FROM outbound").fetchone()[0]
        return 1.0 if following is None else max(0.01, min(1.0, following - time.time()))

    def _send(self, client: httpx.Client, rule: OutboundRule | None, items: list[Any]) -> None:
        seqs = [i[0] for i in items]
        error = None
        if rule is None:
            error = "the rule was removed"
        else:
            body = envelope(
                self.organization_id,
                rule.action_id,
                self.instance_url,
                [(i[2], i[3], json.loads(i[4])) for i in items],
            )
            try:
                response = client.post(
                    rule.endpoint_url,
                    content=body,
                    headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
                )
                if not is_ack(response.content):
                    error = f"HTTP {response.status_code}: no Ack"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        marks = ",".join("?" * len(seqs))
        with self._lock:
            if error is None:
                self._db.execute(f"DELETE FROM outbound WHERE seq IN ({marks})", seqs)
                self.delivered += len(seqs)
                return
            attempts = max(i[5] for i in items) + 1
            delay = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
            self._db.execute(
                f"UPDATE outbound SET attempts = ?, next_at = ?, last_error = ? "
                f"WHERE seq IN ({marks})",
                [attempts, time.time() + delay, error, *seqs],
            )
