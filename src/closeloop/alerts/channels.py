"""Where notifications go: email through SMTP (the standard library's ``smtplib`` and
``email``) and a JSON webhook through ``httpx``. A channel's :meth:`send` raises
:class:`ChannelError` when the message was not accepted; nothing is retried here (the
alerter retries on its next evaluation)."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import httpx

from closeloop.alerts.settings import EmailChannel, WebhookChannel


class ChannelError(Exception):
    """A channel did not accept a notification (connection refused, SMTP or HTTP error);
    the message says which channel and why."""


@dataclass(frozen=True)
class Notification:
    """One message: ``kind`` (``alert``, ``digest``, ``test``), a ``title`` (the subject),
    the ``text`` a person reads (Slack and Teams show it), the ``conditions`` it is about
    (``key``, ``rule``, ``summary``, ``detail``, ``since``: JSON-able dicts) and ``at``
    (aware UTC, when it was made)."""

    kind: str
    title: str
    text: str
    at: datetime
    conditions: list[dict[str, Any]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: ``text`` first (what chat tools display), then the
        structured fields."""
        return {
            "text": self.text,
            "title": self.title,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "conditions": self.conditions,
        }


class Sender(Protocol):
    """A channel: ``name`` and ``describe`` (where it sends, no secrets) and :meth:`send`."""

    name: str

    def describe(self) -> str:
        """Where it sends, in words."""
        ...

    def send(self, note: Notification) -> None:
        """Deliver ``note``; raises :class:`ChannelError` when it was not accepted."""
        ...


class EmailSender:
    """Sends each notification as one plain-text message to every address of ``config``."""

    def __init__(self, name: str, config: EmailChannel) -> None:
        self.name = name
        self.config = config

    def describe(self) -> str:
        """See :meth:`EmailChannel.describe`."""
        return self.config.describe()

    def message(self, note: Notification) -> EmailMessage:
        """The message of ``note`` (``Subject: [closeloop] <title>``, text body)."""
        c = self.config
        msg = EmailMessage()
        msg["Subject"] = f"[closeloop] {note.title}"
        msg["From"] = c.sender
        msg["To"] = ", ".join(c.to)
        msg["Date"] = format_datetime(note.at)
        msg["Message-ID"] = make_msgid(domain=c.sender.rsplit("@", 1)[1])
        msg["X-Closeloop-Kind"] = note.kind
        msg.set_content(note.text)
        return msg

    def send(self, note: Notification) -> None:
        """See :meth:`Sender.send`."""
        c = self.config
        context = (
            ssl.create_default_context(cafile=str(c.ca_bundle) if c.ca_bundle else None)
            if c.ssl or c.starttls
            else None
        )
        try:
            smtp: smtplib.SMTP = (
                smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=context)
                if c.ssl
                else smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            )
            with smtp:
                if c.starttls:
                    smtp.starttls(context=context)
                if c.username is not None and c.password is not None:
                    smtp.login(c.username, c.password.get_secret_value())
                refused = smtp.send_message(self.message(note))
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelError(f"{self.name}: {c.host}:{c.port}: {exc}") from exc
        if refused:
            raise ChannelError(f"{self.name}: recipients refused: {sorted(refused)}")


def signature(secret: str, body: bytes, stamp: int) -> str:
    """The webhook signature header value: ``t=<stamp>,v1=<hex HMAC-SHA256 of
    "<stamp>.<body>">`` (``stamp`` in unix seconds)."""
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


class WebhookSender:
    """POSTs each notification as JSON (:meth:`Notification.payload`); a 2xx answer is
    accepted, anything else raises :class:`ChannelError`."""

    def __init__(
        self, name: str, config: WebhookChannel, client: httpx.Client | None = None
    ) -> None:
        self.name = name
        self.config = config
        self._client = client

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, made at the first send."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.config.timeout_s)
        return self._client

    def describe(self) -> str:
        """See :meth:`WebhookChannel.describe`."""
        return self.config.describe()

    def send(self, note: Notification) -> None:
        """See :meth:`Sender.send`."""
        body = json.dumps(note.payload(), default=str).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.secret is not None:
            stamp = int(note.at.timestamp())
            secret = self.config.secret.get_secret_value()
            headers[self.config.signature_header] = signature(secret, body, stamp)
        try:
            answer = self.client.post(str(self.config.url), content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ChannelError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if not answer.is_success:
            raise ChannelError(f"{self.name}: HTTP {answer.status_code}: {answer.text[:200]}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()


def build_sender(name: str, config: EmailChannel | WebhookChannel) -> Sender:
    """The sender of the configured channel ``name``."""
    if isinstance(config, EmailChannel):
        return EmailSender(name, config)
    return WebhookSender(name, config)
