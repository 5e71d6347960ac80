"""What a connector to one system offers the engine (the system APIs of docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from closeloop.domain.changes import Change
from closeloop.domain.commands import Applied, Command, Outcome
from closeloop.domain.errors import CloseloopError


@dataclass(frozen=True, slots=True)
class ConnectorLimits:
    """The limits a system imposes, as its connector declares them.

    ``batch_size``: most commands in one batch call. ``requests_per_window`` requests per
    ``window_s`` seconds (e.g. Harvest: 100 per 15 s). ``max_concurrent``: requests in flight
    at once. ``call_timeout_s``: the connector's own request timeout; the engine's lease on a
    claimed command must be longer.
    """

    batch_size: int = 100
    requests_per_window: int = 100
    window_s: float = 1.0
    max_concurrent: int = 4
    call_timeout_s: float = 30.0


@runtime_checkable
class Connector(Protocol):
    """One system: read its changes, write commands in batches, find earlier writes.

    Errors: a call that fails as a whole raises :class:`ConnectorError` subclasses; per
    command results are :data:`~closeloop.domain.commands.Outcome` values.
    """

    @property
    def system(self) -> str:
        """The system's name, e.g. ``"tryton"``."""
        ...

    @property
    def limits(self) -> ConnectorLimits:
        """Batch size, rate limit and concurrency this system allows."""
        ...

    def objects(self) -> Sequence[str]:
        """The vendor objects this connector can read changes of."""
        ...

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Pages of changes of ``object_name`` modified at or after ``since`` (all when ``None``).

        Pages come in ascending modification time (then external id), each change with its
        ``modified_at`` set; the connector follows the vendor's paging. Raises
        :class:`TransientError` when the system cannot answer now.
        """
        ...

    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands`` (one batch, at most ``limits.batch_size``) in order.

        Returns one outcome per command, in the same order: a command the system refuses is
        a :class:`~closeloop.domain.commands.Permanent` outcome of its own, never a reason to
        fail the others. Raises :class:`TransientError` or :class:`AmbiguousError` when the
        call fails as a whole, :class:`RefusedError` when the batch's content was refused
        as a whole (the engine then splits it).
        """
        ...

    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """The earlier writes made for any of ``idempotency_keys``, keyed by idempotency key.

        A key absent from the result was not applied. Raises :class:`TransientError` when the
        target cannot answer now.
        """
        ...


class ConnectorError(CloseloopError):
    """A call to a system failed as a whole."""


class TransientError(ConnectorError):
    """Nothing was applied and a later call may succeed (429, 503, timeout before sending).

    ``retry_after_s`` carries the system's ``Retry-After`` when it gave one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AmbiguousError(ConnectorError):
    """The request was sent and no answer came: some or all of it may have been applied."""


class RefusedError(ConnectorError):
    """The system refused the call as a whole for something in its content, and applied
    nothing: a record it cannot take at all (text that is not valid Unicode, a value its
    API cannot parse) spoils the batch it is in.

    The engine splits such a batch in halves until the record stands alone; alone, its
    command becomes a business exception with this message while the others go through.
    It never counts as the system failing (the circuit breaker ignores it).
    """
