"""HTTP connector for the memory sandbox: how every vendor connector maps transport failures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import httpx

from closeloop.connectors.http import classify_http_error, raise_for_status
from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Outcome, command_to_dict, outcome_from_dict
from closeloop.ports.connector import AmbiguousError, ConnectorLimits, TransientError


class MemoryConnector:
    """Talks to ``python -m closeloop.sandboxes.memory`` at ``base_url``.

    ``timeout_s`` bounds each request; a request with no answer within it is ambiguous.
    """

    def __init__(
        self,
        base_url: str,
        *,
        system: str = "memory",
        source_objects: Sequence[str] = ("Record",),
        limits: ConnectorLimits | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._system = system
        self._objects = tuple(source_objects)
        self._limits = limits or ConnectorLimits(batch_size=100, call_timeout_s=timeout_s)
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    @property
    def system(self) -> str:
        """The system's name."""
        return self._system

    @property
    def limits(self) -> ConnectorLimits:
        """Declared limits."""
        return self._limits

    def objects(self) -> Sequence[str]:
        """Objects the sandbox emits changes of."""
        return self._objects

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise classify_http_error(exc) from exc
        raise_for_status(response)
        return response.json()

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Pages of changes since ``since``."""
        params = {"since": since.isoformat()} if since else {}
        body = self._request("GET", f"/changes/{object_name}", params=params)
        for page in body["pages"]:  # the configured name, whatever the sandbox calls itself
            yield [Change.model_validate({**c, "system": self._system}) for c in page]

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """One ``POST /batch``; outcomes in command order."""
        body = self._request(
            "POST", "/batch", json={"commands": [command_to_dict(c) for c in commands]}
        )
        return [outcome_from_dict(o) for o in body["outcomes"]]

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """One ``POST /find``. A failure to answer is transient: nothing is written by a lookup."""
        try:
            body = self._request("POST", "/find", json={"keys": list(idempotency_keys)})
        except AmbiguousError as exc:
            raise TransientError(str(exc)) from exc
        return {k: Applied(v) for k, v in body["found"].items()}
