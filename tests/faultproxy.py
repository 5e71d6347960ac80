"""A fault-injecting HTTP proxy for tests: forwards JSON-RPC calls to a real server and, on
request, drops a response after the server applied the call, or answers an HTTP error."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclass
class Rule:
    """Fault for the next ``count`` calls whose method contains ``method``: ``drop`` (forward,
    then close without answering), an HTTP ``status`` (not forwarded), or ``status_after``
    (forward, then answer that HTTP status instead of the server's answer: a gateway error
    after the call was applied)."""

    method: str
    drop: bool = False
    status: int | None = None
    status_after: int | None = None
    retry_after: str | None = None
    count: int = 1


@dataclass
class Hold:
    """Holds every POST to a path starting with ``path`` until ``release`` is set; sets
    ``arrived`` when the first one came (a call is in flight: a test may act then)."""

    path: str
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class FaultProxy:
    """``url`` forwards to ``upstream``; add :class:`Rule`s to ``rules``, a :class:`Hold`
    to ``hold``."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    hold: Hold | None = None

    def __post_init__(self) -> None:
        proxy = self
        client = httpx.Client(base_url=self.upstream, timeout=300)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hold = proxy.hold
                if hold is not None and self.path.startswith(hold.path):
                    hold.arrived.set()
                    hold.release.wait()
                method = json.loads(body).get("method", "")
                proxy.seen.append(method)
                with lock:
                    rule = next(
                        (r for r in proxy.rules if r.method in method and r.count > 0), None
                    )
                    if rule:
                        rule.count -= 1
                if rule and rule.status:
                    self.send_response(rule.status)
                    if rule.retry_after:
                        self.send_header("Retry-After", rule.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type")
                }
                answer = client.post(self.path, content=body, headers=headers)
                if rule and rule.drop:
                    self.close_connection = True  # the write happened; the answer is lost
                    return
                data = answer.content
                if rule and rule.status_after:
                    data = b"Bad Gateway"
                self.send_response(
                    rule.status_after if rule and rule.status_after else answer.status_code
                )
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self._client = client

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
