"""Bulk calls in which a refused item fails alone.

A vendor's bulk call (Tryton's ``create`` of a thousand timesheet lines, ``post`` of twenty
invoices) is all or nothing: one item it refuses fails the call and nothing of it is
applied. :func:`isolate` makes the call once for all items and, when it is refused, halves the
items until each refused one stands alone, so every other item still goes in through a few
bulk calls: one refused item among ``n`` costs about ``2 log2 n`` calls more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

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
