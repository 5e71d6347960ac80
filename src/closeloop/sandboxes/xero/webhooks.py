"""Xero's webhooks, sent by the sandbox: a subscription validated by "Intent to receive",
then every create and update of contacts, invoices and credit notes delivered, signed, to it.

Follows Xero's webhooks pages ("Overview", "Configuring your server") and the Webhooks
OpenAPI description (``xero-webhooks.yaml``):

- ``PUT /__sandbox/webhook`` ``{"url", "key"}`` subscribes the delivery URL with a webhook
  signing key (made as Xero makes one, 64 random bytes in base64, when ``key`` is left
  out; the answer gives it). Subscribing runs **Intent to receive** at once: a correctly
  signed payload without events must be answered 200 and an incorrectly signed one 401,
  each with no body, no cookie, within ``timeout_s`` (Xero: 5 seconds). The answer's
  ``status`` is ``OK``, else ``FAILED`` with the ``reason``; only an ``OK`` subscription is
  sent events. ``GET /__sandbox/webhook`` shows the subscription and the deliveries,
  ``DELETE /__sandbox/webhook`` removes it.
- An event per record written by a successful Accounting call (a refused call writes
  nothing and sends nothing): ``{"resourceUrl", "resourceId", "eventDateUtc" (the record's
  ``UpdatedDateUTC``, ``2025-12-02T00:44:09.923``), "eventType": "CREATE"|"UPDATE",
  "eventCategory": "CONTACT"|"INVOICE"|"CREDITNOTE", "tenantId", "tenantType":
  "ORGANISATION"}``; a credit note's event carries ``"data": {"Type", "Status"}`` as the
  contract's ``CreditNoteWebhookEvent``. A payment or an allocation updates its invoice (and
  credit note), so those send ``UPDATE`` events; Xero has no payment category.
- Payloads ``{"events", "firstEventSequence", "lastEventSequence", "entropy"}`` (sequences
  count events from 1 per subscription, ``entropy`` 20 random capitals) with the header
  ``x-xero-signature``: base64 of HMAC-SHA256 keyed with the key's UTF-8 bytes over the raw
  body (:func:`signature`).
- Delivery is asynchronous (one thread), so an API answer never waits on the receiver:
  events of ``batch_s`` seconds go in one payload (at most :data:`MAX_EVENTS`). An
  acceptable answer is the one Intent to receive demands of a correctly signed payload; any
  other answer, or none within ``timeout_s``, is retried with the same body. Xero "will
  continue retrying the request, with decreasing frequency for up to 24 hours" and then
  disables the webhook; the sandbox's simplification: delays double from
  ``retry_first_s`` up to ``retry_max_s``, and a payload still undelivered ``give_up_s``
  after its first attempt turns the subscription ``DISABLED`` (its events are dropped;
  subscribing again, which runs Intent to receive again, re-enables it, as in Xero).
  Payloads go one at a time, in sequence order: later events wait behind a retried payload.

Where Xero's documentation is silent the sandbox chose: any ``http``/``https`` URL is taken
(Xero demands HTTPS on 443); the correctly signed request goes first; events of one
category are not filtered (Xero subscribes per category: the sandbox sends all three).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from closeloop.sandboxes.xero.org import Organisation

SIGNATURE_HEADER = "x-xero-signature"
MAX_EVENTS = 100
"""Events in one payload at most (Xero does not document a limit)."""

# org attribute: (eventCategory, resource path, id key)
_KINDS: dict[str, tuple[str, str, str]] = {
    "contacts": ("CONTACT", "Contacts", "ContactID"),
    "invoices": ("INVOICE", "Invoices", "InvoiceID"),
    "credit_notes": ("CREDITNOTE", "CreditNotes", "CreditNoteID"),
}


def signature(key: str, body: bytes) -> str:
    """``x-xero-signature`` of ``body``: base64 of HMAC-SHA256 keyed with ``key`` (UTF-8)."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key() -> str:
    """A webhook signing key as Xero shows one: 64 random bytes in base64."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def _entropy() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))


def _date_utc(moment: datetime) -> str:
    """``2025-12-02T00:44:09.923``: UTC to the millisecond, without an offset (Xero's)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def payload(events: list[dict[str, Any]], first: int, last: int) -> bytes:
    """The raw body of one delivery (compact JSON, in the contract's key order)."""
    body = {
        "events": events,
        "firstEventSequence": first,
        "lastEventSequence": last,
        "entropy": _entropy(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Policy:
    """Timings: events of ``batch_s`` seconds go together; a receiver has ``timeout_s`` to
    answer; retries wait ``retry_first_s`` doubling up to ``retry_max_s``; ``give_up_s``
    after a payload's first attempt the subscription is disabled."""

    batch_s: float = 0.5
    timeout_s: float = 5.0
    retry_first_s: float = 10.0
    retry_max_s: float = 3600.0
    give_up_s: float = 86_400.0


@dataclass
class Mark:
    """The records' ``UpdatedDateUTC`` before a call, to find what the call wrote."""

    stamps: dict[str, dict[str, Any]]


@dataclass
class _Payload:
    body: bytes
    events: int
    first_attempt: float
    due: float
    attempts: int = 0


@dataclass
class Webhooks:
    """The sandbox's webhook subscription and its sender thread (module docstring)."""

    policy: Policy = field(default_factory=Policy)
    url: str | None = None
    key: str | None = None
    status: str = "NONE"
    reason: str | None = None
    resource_base: str = "https://api.xero.com/api.xro/2.0"
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[dict[str, Any]] = []
        self._first_queued = 0.0
        self._inflight: _Payload | None = None
        self._sequence = 0
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.stats = {
            "delivered_payloads": 0,
            "delivered_events": 0,
            "failed_attempts": 0,
            "last_error": None,
        }

    # --- the hook: what a successful Accounting call wrote -------------------------------------
    def mark(self, org: Organisation) -> Mark | None:
        """Before a write (under ``org.lock``): the records' stamps, or ``None`` when no
        subscription takes events (then :meth:`changed` does nothing and costs nothing)."""
        if self.status != "OK":
            return None
        return Mark(
            {
                name: {rid: r.get("_updated") for rid, r in getattr(org, name).items()}
                for name in _KINDS
            }
        )

    def changed(self, org: Organisation, mark: Mark | None) -> None:
        """After a successful call (under ``org.lock``): queue an event per record it
        created or updated, oldest first."""
        if mark is None:
            return
        found: list[tuple[datetime, dict[str, Any]]] = []
        for name, (category, path, id_key) in _KINDS.items():
            before = mark.stamps[name]
            for rid, record in getattr(org, name).items():
                stamp = record.get("_updated")
                if rid in before and before[rid] == stamp:
                    continue
                event = {
                    "resourceUrl": f"{self.resource_base}/{path}/{record[id_key]}",
                    "resourceId": record[id_key],
                    "tenantId": org.tenant_id,
                    "tenantType": "ORGANISATION",
                    "eventCategory": category,
                    "eventType": "UPDATE" if rid in before else "CREATE",
                    "eventDateUtc": _date_utc(stamp),
                }
                if category == "CREDITNOTE":
                    event["data"] = {"Type": record["Type"], "Status": record["Status"]}
                found.append((stamp, event))
        for _, event in sorted(found, key=lambda pair: pair[0]):
            self.on_change(event)

    def on_change(self, event: dict[str, Any]) -> None:
        """Queue one event (a dict of the contract's event fields) for delivery."""
        with self._cond:
            if self.status != "OK":
                return
            if not self._queue:
                self._first_queued = time.monotonic()
            self._queue.append(event)
            self._cond.notify_all()

    # --- subscription -------------------------------------------------------------------------
    def subscribe(self, url: str, key: str, resource_base: str, policy: Policy) -> dict[str, Any]:
        """Subscribe ``url`` with ``key`` and run Intent to receive; the subscription."""
        with self._cond:
            self._generation += 1
            self.url, self.key, self.policy = url, key, policy
            self.status, self.reason = "VALIDATING", None
            self.resource_base = resource_base
            self._queue.clear()
            self._inflight = None
            self._sequence = 0
            self._reset_stats()
            generation = self._generation
        reason = intent_to_receive(url, key, policy.timeout_s)
        with self._cond:
            if generation == self._generation:
                self.status, self.reason = ("OK", None) if reason is None else ("FAILED", reason)
                if reason is None:
                    self._start()
        return self.state()

    def unsubscribe(self) -> dict[str, Any]:
        """Remove the subscription (queued events are dropped)."""
        with self._cond:
            self._generation += 1
            self.url = self.key = None
            self.status, self.reason = "NONE", None
            self._queue.clear()
            self._inflight = None
        return self.state()

    def state(self) -> dict[str, Any]:
        """The subscription and its deliveries, as ``GET /__sandbox/webhook`` answers."""
        with self._cond:
            return {
                "url": self.url,
                "key": self.key,
                "status": self.status,
                "reason": self.reason,
                "pending_events": len(self._queue)
                + (self._inflight.events if self._inflight else 0),
                "last_event_sequence": self._sequence,
                **self.stats,
                "policy": vars(self.policy).copy(),
            }

    # --- the sender thread --------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="xero-webhooks", daemon=True)
            self._thread.start()

    def _next(self) -> tuple[_Payload, str, str, int]:
        """Wait for the payload due next (under no lock on return)."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self.status == "OK" and self._inflight is None and self._queue:
                    ready = self._first_queued + self.policy.batch_s
                    if now >= ready or len(self._queue) >= MAX_EVENTS:
                        events = self._queue[:MAX_EVENTS]
                        del self._queue[:MAX_EVENTS]
                        self._first_queued = now
                        first = self._sequence + 1
                        self._sequence += len(events)
                        body = payload(events, first, self._sequence)
                        self._inflight = _Payload(body, len(events), now, now)
                    else:
                        self._cond.wait(ready - now)
                        continue
                if self.status == "OK" and self._inflight is not None:
                    if now >= self._inflight.due:
                        assert self.url is not None and self.key is not None
                        return self._inflight, self.url, self.key, self._generation
                    self._cond.wait(self._inflight.due - now)
                    continue
                self._cond.wait()

    def _run(self) -> None:
        while True:
            sent, url, key, generation = self._next()
            problem = _post(url, sent.body, signature(key, sent.body), self.policy.timeout_s, 200)
            with self._cond:
                if generation != self._generation or self._inflight is not sent:
                    continue  # subscription changed meanwhile: the payload is gone
                if problem is None:
                    self._inflight = None
                    self.stats["delivered_payloads"] += 1
                    self.stats["delivered_events"] += sent.events
                    continue
                sent.attempts += 1
                self.stats["failed_attempts"] += 1
                self.stats["last_error"] = problem
                p = self.policy
                delay = min(p.retry_first_s * 2 ** (sent.attempts - 1), p.retry_max_s)
                now = time.monotonic()
                if now + delay - sent.first_attempt > p.give_up_s:
                    self.status = "DISABLED"
                    self.reason = (
                        f"a payload was not accepted for {p.give_up_s:g}s "
                        f"({sent.attempts} attempts; last: {problem})"
                    )
                    self._inflight = None
                    self._queue.clear()
                else:
                    sent.due = now + delay


def _post(url: str, body: bytes, signed: str, timeout_s: float, expected: int) -> str | None:
    """POST ``body`` signed ``signed``; why the answer is not the ``expected`` status with
    no body and no cookie in time (``None`` when it is)."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signed}
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        return f"no answer within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"cannot reach {url}: {type(exc).__name__}: {exc}"
    if answer.status_code != expected:
        return f"answered {answer.status_code}, not {expected}"
    if answer.content:
        return f"answered {expected} with a body ({len(answer.content)} bytes); Xero wants none"
    if "set-cookie" in answer.headers:
        return f"answered {expected} with a cookie; Xero wants none"
    return None


def intent_to_receive(url: str, key: str, timeout_s: float) -> str | None:
    """Xero's Intent to receive against ``url``: why it fails (``None``: it passes)."""
    body = payload([], 0, 0)
    good = _post(url, body, signature(key, body), timeout_s, 200)
    if good is not None:
        return f"the correctly signed payload {good}"
    wrong = signature(new_key(), body)
    bad = _post(url, body, wrong, timeout_s, 401)
    if bad is not None:
        return f"the incorrectly signed payload {bad}"
    return None


def install(app: FastAPI, webhooks: Webhooks) -> None:
    """``PUT|GET|DELETE /__sandbox/webhook`` (module docstring)."""

    @app.put("/__sandbox/webhook")
    def subscribe(body: dict[str, Any], request: Request) -> JSONResponse:
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return JSONResponse({"detail": "url must be an http(s) URL"}, 422)
        key = body.get("key") or new_key()
        if not isinstance(key, str):
            return JSONResponse({"detail": "key must be text"}, 422)
        try:
            fields = {k: float(v) for k, v in body.items() if k in vars(Policy())}
        except (TypeError, ValueError):
            return JSONResponse({"detail": f"timings are seconds: {sorted(vars(Policy()))}"}, 422)
        base = str(request.base_url).rstrip("/") + "/api.xro/2.0"
        return JSONResponse(webhooks.subscribe(url, key, base, Policy(**fields)))

    @app.get("/__sandbox/webhook")
    def subscription() -> dict[str, Any]:
        return webhooks.state()

    @app.delete("/__sandbox/webhook")
    def unsubscribe() -> dict[str, Any]:
        return webhooks.unsubscribe()
