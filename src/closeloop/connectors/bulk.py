"""Bulk calls in which a refused item fails alone.

A vendor's bulk call (Tryton's ``create`` of a thousand timesheet lines, ``post`` of twenty
invoices) is all or nothing: one item it refuses fails the call and nothing of it is
applied. :func:`isolate` makes the call once for all items and, when it is refused, halves the
items until each refused one stands alone, so every other item still goes in through a few
bulk calls: one refused item among ``n`` costs about ``2 log2 n`` calls more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from closeloop.domain.commands import (
    Ambiguous,
    Applied,
    Command,
    ExceptionClass,
    Outcome,
    Permanent,
    Transient,
)
from closeloop.ports.connector import AmbiguousError, TransientError

T = TypeVar("T")
R = TypeVar("R")


class NotSent(TransientError):
    """An item was not sent: an earlier call of its batch failed in transport."""


def isolate(
    items: Sequence[T],
    call: Callable[[Sequence[T]], Sequence[R]],
    refused: tuple[type[Exception], ...],
) -> list[R | Exception]:
    """``call(items)`` in as few calls as the refusals allow; one result per item, in order.

    ``call`` takes a slice of ``items`` and returns one result per item, or raises one of
    ``refused`` when the system refused the slice as a whole and applied none of it. Such a
    slice is halved and each half called again; a refused item alone gets its exception as
    its result. A transport failure (:class:`TransientError`, :class:`AmbiguousError`) is
    the result of every item of the failing call, and the items after it are not sent
    (:class:`NotSent`): the system is not answering, so the rest waits for a retry.

    Raises ``ValueError`` when ``call`` returns a different number of results than items.
    """
    results: list[R | Exception] = [_Unset() for _ in items]
    stopped: list[Exception] = []

    def run(low: int, high: int) -> None:
        if stopped:
            for i in range(low, high):
                results[i] = NotSent(f"not sent: an earlier call failed ({stopped[0]})")
            return
        try:
            answer = call(items[low:high])
        except refused as exc:
            if high - low == 1:
                results[low] = exc
                return
            middle = (low + high) // 2
            run(low, middle)
            run(middle, high)
            return
        except (TransientError, AmbiguousError) as exc:
            stopped.append(exc)
            for i in range(low, high):
                results[i] = exc
            return
        if len(answer) != high - low:
            raise ValueError(f"{len(answer)} results for {high - low} items")
        results[low:high] = answer

    if items:
        run(0, len(items))
    return results


class _Unset(Exception):
    """A result not filled in yet (every one is filled before :func:`isolate` returns)."""


def malformed(exc: Exception) -> Permanent:
    """The permanent outcome of a command whose payload does not fit its operation."""
    return Permanent(ExceptionClass.VALIDATION, f"malformed command: missing or bad {exc}")


def parse_each(
    batch: Sequence[Command], parse: Callable[[dict[str, Any]], T]
) -> tuple[dict[int, Outcome], list[tuple[int, T]]]:
    """Each command's payload parsed, by position; a malformed one (``parse`` raised
    ``KeyError``, ``ValueError`` or ``TypeError``) refused alone, its outcome by position."""
    outcomes: dict[int, Outcome] = {}
    items: list[tuple[int, T]] = []
    for position, command in enumerate(batch):
        try:
            items.append((position, parse(command.payload)))
        except (KeyError, ValueError, TypeError) as exc:
            outcomes[position] = malformed(exc)
    return outcomes, items


def group_by_operation(commands: Sequence[Command]) -> list[tuple[str, list[int]]]:
    """Positions of ``commands`` grouped by operation, in order of first appearance; only
    consecutive runs when a business key repeats (its commands must keep their order)."""
    if len({c.business_key for c in commands}) == len(commands):
        groups: dict[str, list[int]] = {}
        for position, command in enumerate(commands):
            groups.setdefault(command.operation, []).append(position)
        return list(groups.items())
    runs: list[tuple[str, list[int]]] = []
    for position, command in enumerate(commands):
        if runs and runs[-1][0] == command.operation:
            runs[-1][1].append(position)
        else:
            runs.append((command.operation, [position]))
    return runs


def run_groups(
    commands: Sequence[Command], run_group: Callable[[str, list[Command]], list[Outcome]]
) -> list[Outcome]:
    """Run ``commands`` group by group (:func:`group_by_operation`), ``run_group(operation,
    commands)`` giving one outcome per command. After a transport failure the remaining
    groups are not sent (transient, "not sent"); when nothing was applied or refused at all,
    the failure is raised for the whole batch (:class:`AmbiguousError` when any outcome was
    ambiguous, else :class:`TransientError` with its ``Retry-After``)."""
    outcomes: list[Outcome | None] = [None] * len(commands)
    failure: Transient | Ambiguous | None = None
    for operation, positions in group_by_operation(commands):
        batch = [commands[i] for i in positions]
        if failure is not None:
            results: list[Outcome] = [Transient(f"not sent: {failure.reason}")] * len(batch)
        else:
            results = run_group(operation, batch)
        for position, outcome in zip(positions, results, strict=True):
            outcomes[position] = outcome
            if failure is None and isinstance(outcome, (Transient, Ambiguous)):
                failure = outcome
    done = [o for o in outcomes if o is not None]
    if failure is not None and not any(isinstance(o, (Applied, Permanent)) for o in done):
        if any(isinstance(o, Ambiguous) for o in done):
            raise AmbiguousError(failure.reason)
        raise TransientError(failure.reason, failure.retry_after_s)  # type: ignore[union-attr]
    return done


def transport_outcome(exc: TransientError | AmbiguousError) -> Outcome:
    """The outcome of a command whose call failed in transport."""
    if isinstance(exc, TransientError):
        return Transient(str(exc), exc.retry_after_s)
    return Ambiguous(str(exc))
