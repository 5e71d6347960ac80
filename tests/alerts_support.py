"""Real receivers for the alerts tests: a local SMTP server (aiosmtpd, optionally with
STARTTLS and a login) and a local HTTP webhook receiver (the standard library's threading
HTTP server), both on 127.0.0.1 and stopped by the fixture that started them; and a clock
the test moves."""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class ManualClock:
    """Aware UTC time and monotonic seconds that move only when the test moves them."""

    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.at += step
        self.mono += step.total_seconds()


class _Inbox:
    """aiosmtpd's handler: keeps each message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on 127.0.0.1:``port``; with ``tls`` (a server ``SSLContext``) it offers and
    requires STARTTLS, with ``login`` (user, password) it requires that login."""

    def __init__(
        self,
        port: int,
        tls: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = port
        self.inbox = _Inbox()
        self.logins: list[str] = []
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=True)
        if login is not None:

            def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
                ok = (
                    isinstance(data, LoginPassword)
                    and (
                        data.login.decode(),
                        data.password.decode(),
                    )
                    == login
                )
                if ok:
                    self.logins.append(data.login.decode())
                return AuthResult(success=ok, handled=False)

            kwargs.update(authenticator=check, auth_required=True)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=port, **kwargs)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[tuple[str, list[str], EmailMessage]]:
        with self.inbox.lock:
            return list(self.inbox.messages)


@dataclass
class Received:
    """One request the webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``status``."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                receiver.arrived.set()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ops"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
