"""Text the hub cannot store or send (surrogates, NUL) is refused at intake (issue 12).

A webhook delivery holding it is refused whole with the field named; a polled record holding
it fails alone (a rejected inbox row with a validation exception) and its next good version
applies and settles the exception. Real engine and store, memory systems; SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import select

from closeloop.bootstrap import Hub, build_http_app
from closeloop.domain.changes import (
    INTAKE_REFUSAL,
    Change,
    deferred_text_checks,
    payload_problems,
    scrub_payload,
)
from closeloop.engine.intake import IntakeError
from closeloop.engine.operations import OperationError
from closeloop.store import tables as t
from closeloop.store.sql import SqlStore
from tests.conftest import make_hub, signed
from tests.memory_system import MemorySystem

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LONE = "lone surrogate U+DC00 at character 5 (invalid Unicode; not UTF-8 encodable)"


@pytest.fixture
def systems() -> tuple[MemorySystem, MemorySystem]:
    return MemorySystem(name="crm"), MemorySystem(name="erp")


@pytest.fixture
def hub(db_url: str, systems: tuple[MemorySystem, MemorySystem]) -> Iterator[Hub]:
    """A hub mirroring crm.Record into erp, on each backend."""
    source, target = systems
    hub = make_hub(db_url, source, target)
    yield hub
    hub.close()


def delivery(external_id: str, payload: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return {
        "system": "crm",
        "object": "Record",
        "external_id": external_id,
        "version": version,
        "payload": payload,
    }


def inbox_rows(hub: Hub) -> list[Any]:
    with hub.store.engine.connect() as conn:
        return list(conn.execute(select(t.inbox).order_by(t.inbox.c.id)))


async def post(hub: Hub, path: str, body: bytes) -> httpx.Response:
    """POST ``body`` as JSON to the hub's HTTP app, in process."""
    transport = httpx.ASGITransport(app=build_http_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
        return await http.post(path, content=body, headers=signed(body))


def counter(hub: Hub, result: str) -> float | None:
    return hub.metrics.registry.get_sample_value(
        "closeloop_changes_received_total",
        {"system": "crm", "object": "Record", "result": result},
    )


# --- (a) the webhook path: refused whole, the field named, nothing stored ------------------


def test_webhook_with_a_lone_surrogate_in_a_nested_field_is_refused_whole(hub: Hub) -> None:
    body = json.dumps(
        [
            delivery("a", {"name": "fine"}),
            delivery("b", {"name": "b", "customer": {"addresses": [{"street": "Stra\udc00e"}]}}),
            delivery("c", {"name": "c", "notes": "nul\u0000here", "na\udc00me": "x"}),
        ]
    ).encode()  # ensure_ascii: the body carries the escapes "\udc00" and "\u0000"
    assert b"\\udc00" in body and b"\\u0000" in body
    answer = asyncio.run(post(hub, "/webhooks/changes", body))
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        f"change 1: payload.customer.addresses[0].street: {LONE}",
        "change 2: payload.notes: NUL character U+0000 at character 4 "
        "(PostgreSQL text and jsonb cannot hold it)",
        "change 2: payload.na\\udc00me: lone surrogate U+DC00 at character 3 of the field name "
        "(invalid Unicode; not UTF-8 encodable)",
    ]
    assert hub.operations.stats().inbox_by_status == {}
    assert inbox_rows(hub) == []


def test_intake_rechecks_changes_built_without_the_check(hub: Hub) -> None:
    with deferred_text_checks():
        lenient = Change(**delivery("b", {"name": "b", "notes": "abcd\udc00"}))
    unchecked = Change.model_construct(**delivery("c", {"name": "c", "tags": ["\x00"]}))
    with pytest.raises(IntakeError) as info:
        hub.intake.accept([Change(**delivery("a", {"name": "a"})), lenient, unchecked])
    assert info.value.problems == [
        f"change 1: payload.notes: {LONE}",
        "change 2: payload.tags[0]: NUL character U+0000 at character 1 "
        "(PostgreSQL text and jsonb cannot hold it)",
    ]
    assert hub.operations.stats().inbox_by_status == {}
    # outside the block the model itself refuses it, naming the path
    with pytest.raises(ValidationError, match=r"notes: lone surrogate U\+DC00"):
        Change(**delivery("b", {"name": "b", "notes": "abcd\udc00"}))


def test_a_payload_with_many_bad_strings_is_named_in_ten_lines_and_a_count(hub: Hub) -> None:
    payload = {"name": "x", "lines": [f"line {i} \udc00" for i in range(12)]}
    with pytest.raises(IntakeError) as info:
        hub.intake.validate([delivery("a", payload)])
    assert len(info.value.problems) == 11
    assert info.value.problems[0] == (
        "change 0: payload.lines[0]: lone surrogate U+DC00 at character 8 "
        "(invalid Unicode; not UTF-8 encodable)"
    )
    assert info.value.problems[-1] == "change 0: payload: and 2 more"


# --- (b), (c) the poll path: the bad record fails alone, its fixed version settles it -------


def test_poll_refuses_only_the_bad_record_and_its_fixed_version_settles_it(
    hub: Hub, systems: tuple[MemorySystem, MemorySystem]
) -> None:
    source, target = systems
    for i in range(4):
        source.put("Record", f"r{i}", {"name": f"n{i}"}, at=T0 + timedelta(seconds=i))
    last = T0 + timedelta(seconds=10)  # the bad record is the newest: the cursor must pass it
    bad = {"name": "n9", "address": {"lines": ["ok", "Stra\udc00e"]}}
    source.put("Record", "r9", bad, at=last)

    assert hub.worker.poll_all() == 4  # nothing raised, the four good ones taken
    assert hub.worker.failed_polls == []
    assert hub.worker.run_until_idle(30)
    assert sorted(d["name"] for d in target.targets.values()) == ["n0", "n1", "n2", "n3"]
    assert hub.operations.stats().inbox_by_status == {"applied": 4, "rejected": 1}
    with hub.store.transaction() as tx:
        cursor = tx.get_cursor("crm", "Record")
    assert cursor is not None and cursor.watermark == last

    (exc,) = hub.operations.list_exceptions()
    assert exc.error_class.value == "validation" and exc.impact.value == "reporting"
    assert exc.entity == "crm:Record:r9"
    assert exc.message == (
        "crm Record r9 (version 1) was refused: it holds characters that cannot be stored or "
        f"sent to another system (address.lines[1]: {LONE}). "
        "Fix the record in crm; its next version is taken."
    )
    refused = inbox_rows(hub)[-1]
    assert exc.inbox_id == refused.id and exc.correlation_id == refused.correlation_id
    assert refused.status == "rejected" and refused.error == INTAKE_REFUSAL + exc.message
    assert refused.payload == {"name": "n9", "address": {"lines": ["ok", "Stra\ufffde"]}}
    assert counter(hub, "refused") == 1.0 and counter(hub, "accepted") == 4.0

    # its stored copy is scrubbed, so it cannot be replayed: only a new version fixes it
    with pytest.raises(OperationError, match="nothing to replay: fix the source record"):
        hub.operations.replay(exc.id, "ops", "try again")
    # polling again reads it inside the overlap: no second row, no second exception
    assert hub.worker.poll_all() == 0
    assert len(inbox_rows(hub)) == 5 and len(hub.operations.list_exceptions()) == 1

    # (c) the record fixed in the source: its next version is applied and settles it
    fixed = {"name": "n9", "address": {"lines": ["ok", "Straße"]}}
    source.put("Record", "r9", fixed, at=last + timedelta(seconds=5))
    assert hub.worker.poll_all() == 1
    assert hub.worker.run_until_idle(30)
    assert fixed in target.targets.values()
    assert hub.operations.list_exceptions() == []
    settled = hub.operations.show(exc.id)
    assert settled.status == "resolved"
    assert settled.resolution == "fixed at source: a newer version applied"
    assert hub.operations.stats().inbox_by_status == {"applied": 5, "rejected": 1}


def test_a_bad_version_of_an_applied_record_is_refused_and_the_next_good_one_settles_it(
    hub: Hub, systems: tuple[MemorySystem, MemorySystem]
) -> None:
    source, target = systems
    source.put("Record", "r", {"name": "first"})
    hub.worker.poll_all()
    assert hub.worker.run_until_idle(30)
    source.put("Record", "r", {"name": "second", "memo": "\x00"})
    assert hub.worker.poll_all() == 0
    assert hub.worker.run_until_idle(30)
    (exc,) = hub.operations.list_exceptions()
    assert "crm Record r (version 2) was refused" in exc.message
    assert "memo: NUL character U+0000 at character 1" in exc.message
    assert list(target.targets.values()) == [{"name": "first"}]  # the bad version sent nowhere

    source.put("Record", "r", {"name": "third"})
    assert hub.worker.poll_all() == 1
    assert hub.worker.run_until_idle(30)
    assert list(target.targets.values()) == [{"name": "third"}]
    assert hub.operations.list_exceptions() == []


def test_store_keeps_refused_changes_once_and_never_resets_them(store: SqlStore) -> None:
    change = Change(**delivery("x", {"name": "\ufffd"}))
    with store.transaction() as tx:
        (first,) = tx.insert_refused([(change, INTAKE_REFUSAL + "bad text")], T0)
        assert first is not None
        assert tx.insert_refused([(change, INTAKE_REFUSAL + "bad text")], T0) == [None]
        assert tx.insert_changes([change], T0) == [False]  # same identity
        assert tx.claim_inbox(10) == []  # never offered to apply
        assert tx.reset_inbox(first, T0) is False
        assert tx.stats().inbox_by_status == {"rejected": 1}


# --- (d) the check agrees with UTF-8 encoding, whatever the payload -------------------------

any_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),  # surrogates and NUL included
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
        st.just("\x00"),
    ),
    max_size=12,
)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def utf8_encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(payload=st.dictionaries(any_text, json_like, max_size=5))
def test_check_reports_a_problem_exactly_when_the_payload_cannot_be_stored_or_sent(
    payload: dict[str, Any],
) -> None:
    problems = payload_problems(payload)
    bad = not utf8_encodable(payload) or has_nul(payload)
    assert bool(problems) == bad
    for problem in problems:  # each message can itself be stored and sent
        assert utf8_encodable(str(problem)) and "\x00" not in str(problem)
    scrubbed = scrub_payload(payload)
    assert payload_problems(scrubbed) == [] and utf8_encodable(scrubbed)
    if bad:
        with pytest.raises(ValidationError):
            Change(**delivery("p", payload))
    else:
        assert scrubbed == payload
        assert Change(**delivery("p", payload)).payload == payload
    with deferred_text_checks():  # the poll path: built as it is, checked by intake
        assert Change(**delivery("p", payload)).payload == payload


def test_an_older_version_applied_later_leaves_a_newer_refusal_open(
    hub: Hub, systems: tuple[MemorySystem, MemorySystem]
) -> None:
    source, target = systems
    source.put("Record", "r", {"name": "first"})
    hub.worker.poll_all()  # version 1 waits in the inbox, not applied yet
    source.put("Record", "r", {"name": "second", "memo": "\udc00"})
    hub.worker.poll_all()  # version 2 refused at intake
    assert hub.worker.run_until_idle(30)
    assert list(target.targets.values()) == [{"name": "first"}]
    (exc,) = hub.operations.list_exceptions()  # applying version 1 did not settle version 2
    assert "crm Record r (version 2) was refused" in exc.message


def test_an_older_version_delivered_after_a_newer_refusal_leaves_it_open(
    hub: Hub, systems: tuple[MemorySystem, MemorySystem]
) -> None:
    source, target = systems
    source.put("Record", "r", {"name": "first"})
    source.put("Record", "r", {"name": "second", "memo": "\udc00"})
    hub.worker.poll_all()  # only version 2 is polled, and refused
    hub.intake.accept([delivery("r", {"name": "first"}, version="1")])  # version 1 comes late
    assert hub.worker.run_until_idle(30)
    assert list(target.targets.values()) == [{"name": "first"}]
    (exc,) = hub.operations.list_exceptions()  # version 2 still needs fixing at the source
    assert "crm Record r (version 2) was refused" in exc.message
