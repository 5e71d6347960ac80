"""Structured logs (structlog): console for people, JSON for production; correlation ids.
And the probe server of a worker process: ``/metrics`` and ``/healthz`` on a port of its own.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, TextIO, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

_HANDLER_NAME = "closeloop"


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    """Route structlog and stdlib logging to stderr as ``fmt`` (``console`` or ``json``).

    Every event carries the context bound with ``structlog.contextvars`` (the correlation id).
    Records of stdlib loggers (uvicorn, httpx, alembic, ...) and Python warnings go through
    the same renderer (structlog's ``ProcessorFormatter``): with ``json`` every line on stderr
    is one JSON object with ``event``, ``level``, ``timestamp`` (and ``logger`` for stdlib
    records). Calling it again replaces the earlier configuration.
    """
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(cast(TextIO, _CurrentStderr()))
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.captureWarnings(True)


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (loggers are cached on first use:
    one bound to the stream current at configuration would outlive a redirection, such as a
    command run in-process by a test runner, and then write to a closed file)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the process is healthy, and the details as JSON-ready data."""


class ProbeServer:
    """``/metrics`` (Prometheus text of ``registry``) and ``/healthz`` (``health()`` as JSON:
    200 when healthy, else 503) over HTTP on ``host:port`` (0: a free port), served by a
    thread until :meth:`close`. No credential is asked: bind it to a private interface.
    Raises ``OSError`` when the address cannot be bound."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return cast(Iterable[bytes], metrics(environ, start_response))
            if path == "/healthz":
                ok, detail = health()
                body = json.dumps(detail).encode()
                status = "200 OK" if ok else "503 Service Unavailable"
            else:
                body, status = b'{"error": "not found"}', "404 Not Found"
            start_response(status, [("Content-Type", "application/json")])
            return [body]

        self._server = make_server(host, port, app, _ThreadingServer, _QuietHandler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="probes", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""
