"""The connector contract: what the engine relies on from every connector, run on each one.

The engine knows a system only through the ``Connector`` protocol
(:mod:`closeloop.ports.connector`). It delivers exactly once, keeps polling without loss and
parks only what a system refuses because every connector does the same five things:

1. ``execute`` is idempotent: the same command run twice is ``Applied`` both times and has
   one effect in the target (a worker re-sends after a crash or a lost lease).
2. ``find`` after a lost answer: a command applied whose answer never came back is found by
   its idempotency key (the engine then does not send it again); a key never applied is
   absent from ``find``'s result (the engine then sends it).
3. ``read_changes`` overlaps and loses nothing: read again from a watermark a little before
   the last change, it returns every change at or after it (also a record changed after the
   first read, as it is now), each with an aware ``modified_at``, in pages in ascending
   (``modified_at``, external id) order, never anything older.
4. Errors by command: a command the system refuses is a ``Permanent`` outcome of its own in
   a batch whose other commands are ``Applied``; a payload that does not fit its canonical
   operation is ``Permanent`` ``validation``, never an exception; a system answering 503 or
   429 makes the call transient or ambiguous (never applied or permanent), writes nothing,
   and the command goes through once it answers again.
5. Configuration: ``limits`` is a ``ConnectorLimits`` with positive values (and the
   configured batch size); ``system`` is the configured name (never the connector's
   default), and the commands' idempotency keys and every ``Change.system`` use it.

Each connector is one case (:class:`tests.contract_support.ContractCase`): built through the
connector table from a ``systems:`` entry under a non-default name, as the hub builds it, on
its sandbox (memory, Salesforce, Harvest) or a real Tryton (marked ``tryton``). A new
connector adds one case to ``tests/contract_support.py`` and to :data:`CASES` and passes this
suite before anything else is built on it. A case that breaks an item is marked
``xfail(strict=True)`` in :data:`KNOWN_FAILURES` with the reason, until its connector is
fixed (the strict mark then fails and the entry must go).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from closeloop.domain.changes import Change
from closeloop.domain.commands import Ambiguous, Applied, ExceptionClass, Permanent, Transient
from closeloop.domain.operations import split_idempotency_key
from closeloop.ports.connector import AmbiguousError, Connector, ConnectorLimits, TransientError
from tests.contract_support import BATCH_SIZE, ContractCase, fresh, start_case
from tests.test_tryton import tryton  # noqa: F401 - the session's real Tryton

CASES = ("memory", "tryton", "salesforce", "harvest", "xero")
"""Every connector; each a :class:`~tests.contract_support.ContractCase` of that kind."""

MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {"tryton": (pytest.mark.tryton,)}

KNOWN_FAILURES: dict[tuple[str, str], str] = {
    ("memory", "idempotent"): (
        "by design: the memory sandbox applies and logs every write it is sent (it keeps no "
        "idempotency of its own), so that the engine's crash and scale-out tests see any "
        "duplicate effect the hub causes; against it the engine's find-before-resend is "
        "what keeps effects single"
    ),
    ("harvest", "find"): (
        "HarvestConnector.find never reports upsert_project (it is several writes, so a "
        "project found by its code may lack an assignment): an applied upsert_project whose "
        "answer was lost is absent from find, as if never applied (a resend completes it "
        "and writes nothing twice)"
    ),
}
"""(case, contract item) -> why that case fails that item today."""

OVERLAP = timedelta(seconds=1)
"""How far before the watermark the second read starts (the engine's overlap window)."""

pytestmark = pytest.mark.timeout(300)


def cases(item: str) -> list[Any]:
    """The cases as parameters of the test of contract ``item``, each with its marks."""
    params = []
    for kind in CASES:
        marks = list(MARKS.get(kind, ()))
        reason = KNOWN_FAILURES.get((kind, item))
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(kind, marks=marks, id=kind))
    return params


@pytest.fixture(scope="module")
def case(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContractCase]:
    """The case of ``request.param``, started once for the module's tests of it."""
    kind = str(request.param)
    yield from start_case(kind, request, tmp_path_factory.mktemp(f"contract-{kind}"))


def read(case: ContractCase, since: datetime | None) -> list[Sequence[Change]]:
    """Every page of the case's change feed from ``since``."""
    return [list(page) for page in case.connector.read_changes(case.object_name, since)]


def id_order(external_id: str) -> tuple[int, int, str]:
    """External ids in the vendor's order: numbers (Tryton, Harvest) as numbers."""
    if external_id.isdigit():
        return (0, int(external_id), "")
    return (1, 0, external_id)


def check_pages(case: ContractCase, pages: list[Sequence[Change]], since: datetime | None) -> None:
    """Pages of changes of the case's object, none empty, each change modified at or after
    ``since`` with an aware ``modified_at``, in ascending (``modified_at``, external id)
    order within and across pages."""
    assert all(pages), "an empty page"
    changes = [c for page in pages for c in page]
    for change in changes:
        assert isinstance(change, Change)
        assert change.object == case.object_name
        assert change.modified_at is not None, change
        assert change.modified_at.utcoffset() is not None, change
        if since is not None:
            assert change.modified_at >= since, (change.modified_at, since)
    keys = [(c.modified_at, id_order(c.external_id)) for c in changes]
    assert keys == sorted(keys), "pages not in ascending (modified_at, external id) order"


def latest(pages: list[Sequence[Change]]) -> dict[str, Change]:
    """The last change of each record read (the feed is in modification order)."""
    return {c.external_id: c for page in pages for c in page}


# --- 1. idempotent execute ---------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("idempotent"), indirect=True)
def test_the_same_command_executed_twice_is_applied_twice_with_one_effect(
    case: ContractCase,
) -> None:
    command = case.command(fresh("twice"))
    assert case.effects(command) == 0
    first = case.connector.execute([command])
    second = case.connector.execute([command])
    assert len(first) == len(second) == 1
    assert isinstance(first[0], Applied), first
    assert isinstance(second[0], Applied), second
    assert case.effects(command) == 1


# --- 2. find after a lost answer ---------------------------------------------------------------
@pytest.mark.parametrize("case", cases("find"), indirect=True)
def test_find_sees_a_write_whose_answer_was_lost_and_not_one_never_made(
    case: ContractCase,
) -> None:
    lost = case.command(fresh("lost"))
    never = case.command(fresh("never"))
    assert case.connector.find([lost.idempotency_key]) == {}  # not applied yet
    case.lose_answer(lost)
    assert case.effects(lost) == 1  # the system applied it; the hub never heard
    found = case.connector.find([lost.idempotency_key, never.idempotency_key])
    assert set(found) == {lost.idempotency_key}, found
    assert isinstance(found[lost.idempotency_key], Applied)
    assert case.effects(never) == 0


@pytest.mark.parametrize("fault", ["server_error", "rate_limited"])
@pytest.mark.parametrize("case", cases("unavailable"), indirect=True)
def test_a_system_that_cannot_answer_now_is_retried_never_refused(
    case: ContractCase, fault: str
) -> None:
    """A 503 or a 429 is the system's state, not the record's: the call raises (or its
    outcomes are) transient or ambiguous, never applied or permanent, nothing is written, and
    the same command goes through once the system answers again."""
    command = case.command(fresh("busy"))
    with case.failing(fault) as connector:
        try:
            (outcome,) = connector.execute([command])
        except (TransientError, AmbiguousError):
            pass
        else:
            assert isinstance(outcome, (Transient, Ambiguous)), outcome
    assert case.effects(command) == 0
    (again,) = case.connector.execute([command])
    assert isinstance(again, Applied), again
    assert case.effects(command) == 1


# --- 3. change feed: overlap without loss ------------------------------------------------------
@pytest.mark.parametrize("case", cases("read_changes"), indirect=True)
def test_reading_again_from_before_the_watermark_loses_nothing(case: ContractCase) -> None:
    run = fresh("feed")
    a = case.change(f"{run}-a", f"{run}-a1")
    b = case.change(f"{run}-b", f"{run}-b1")
    case.settle()
    first = read(case, None)
    check_pages(case, first, None)
    seen = latest(first)
    assert case.tag_of(seen[a]) == f"{run}-a1" and case.tag_of(seen[b]) == f"{run}-b1"
    watermark = max(c.modified_at for page in first for c in page if c.modified_at)
    assert seen[b].modified_at == watermark  # b is the last change the first read saw
    at_watermark = read(case, watermark)  # "at or after": the watermark itself is included
    check_pages(case, at_watermark, watermark)
    assert case.tag_of(latest(at_watermark)[b]) == f"{run}-b1"
    since = watermark - OVERLAP

    assert case.change(f"{run}-a", f"{run}-a2") == a  # changed after the first read
    new = case.change(f"{run}-c", f"{run}-c1")  # new after the first read
    case.settle()
    second = read(case, since)
    check_pages(case, second, since)
    now = latest(second)
    assert case.tag_of(now[a]) == f"{run}-a2"
    assert case.tag_of(now[new]) == f"{run}-c1"
    assert case.tag_of(now[b]) == f"{run}-b1"  # inside the overlap: read again
    before, after = seen[a].modified_at, now[a].modified_at
    assert before is not None and after is not None and after >= before
    overlapped = {
        c.external_id for page in first for c in page if c.modified_at and c.modified_at >= since
    }
    assert overlapped <= set(now), "a change inside the overlap was not read again"


# --- 4. errors by command ----------------------------------------------------------------------
@pytest.mark.parametrize("case", cases("refused"), indirect=True)
def test_a_refused_command_fails_alone_in_its_batch(case: ContractCase) -> None:
    good = case.command(fresh("good"))
    bad = case.refused(fresh("bad"))
    also_good = case.command(fresh("good"))
    outcomes = case.connector.execute([good, bad, also_good])
    assert [type(o) for o in outcomes] == [Applied, Permanent, Applied], outcomes
    refusal = outcomes[1]
    assert isinstance(refusal, Permanent)
    assert refusal.error_class is ExceptionClass.VALIDATION and refusal.message, refusal
    assert (case.effects(good), case.effects(bad), case.effects(also_good)) == (1, 0, 1)
    assert case.connector.find([bad.idempotency_key]) == {}


@pytest.mark.parametrize("case", cases("malformed"), indirect=True)
def test_a_malformed_canonical_payload_is_a_permanent_validation_outcome(
    case: ContractCase,
) -> None:
    malformed = case.malformed(fresh("malformed"))
    (alone,) = case.connector.execute([malformed])  # an outcome, not an exception
    assert isinstance(alone, Permanent) and alone.error_class is ExceptionClass.VALIDATION, alone
    good = case.command(fresh("good"))
    outcomes = case.connector.execute([case.malformed(fresh("malformed")), good])
    assert isinstance(outcomes[0], Permanent), outcomes
    assert outcomes[0].error_class is ExceptionClass.VALIDATION, outcomes
    assert isinstance(outcomes[1], Applied), outcomes
    assert case.effects(good) == 1


# --- 5. limits and the configured name ---------------------------------------------------------
@pytest.mark.parametrize("case", cases("limits"), indirect=True)
def test_limits_are_declared_and_positive(case: ContractCase) -> None:
    connector = case.connector
    assert isinstance(connector, Connector)
    limits = connector.limits
    assert isinstance(limits, ConnectorLimits)
    assert limits.batch_size == BATCH_SIZE  # as configured
    assert limits.requests_per_window > 0 and limits.window_s > 0
    assert limits.max_concurrent > 0 and limits.call_timeout_s > 0
    assert all(isinstance(v, int) for v in (limits.batch_size, limits.requests_per_window))
    assert case.object_name in connector.objects()


@pytest.mark.parametrize("case", cases("system_name"), indirect=True)
def test_the_configured_system_name_is_used_throughout(case: ContractCase) -> None:
    assert case.system != case.kind
    assert case.connector.system == case.system
    command = case.command(fresh("named"))
    assert command.system == case.system
    assert split_idempotency_key(command.idempotency_key)[0] == case.system
    (outcome,) = case.connector.execute([command])
    assert isinstance(outcome, Applied), outcome
    record = case.change(fresh("named"), fresh("tag"))
    case.settle()
    changes = [c for page in read(case, None) for c in page]
    assert record in {c.external_id for c in changes}
    assert {c.system for c in changes} == {case.system}
