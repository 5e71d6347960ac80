"""The console's read models, pure: exceptions grouped by cause, the overview's figures, and
engagements found and told as a timeline from flow states, commands and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from closeloop.domain.commands import Command, CommandStatus, ExceptionClass, Impact
from closeloop.domain.records import FlowState
from closeloop.engine.views import group_exceptions, normalise_message, overview
from closeloop.flows.timeline import deal_keys, index, related_entities, search, timeline
from closeloop.ports.store import AuditEntry, CommandRow, ExceptionRow, StoreStats

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def row(i: int, entity: str, message: str, cls: str = "validation", age_h: int = 0) -> ExceptionRow:
    at = NOW - timedelta(hours=age_h)
    return ExceptionRow(
        i, ExceptionClass(cls), Impact.REVENUE, entity, message, "open", i, None, None, at, at
    )


def test_exceptions_of_one_cause_form_one_group_whatever_their_ids() -> None:
    rows = [
        row(
            1,
            "harvest:time_entry:101",
            "time entry 101 (7.5 h on 2026-03-03) cannot be billed: project SF-006A is closed",
            age_h=5,
        ),
        row(
            2,
            "harvest:time_entry:102",
            "time entry 102 (2 h on 2026-03-04) cannot be billed: project SF-006A is closed",
            age_h=7,
        ),
        row(
            3,
            "harvest:time_entry:103",
            "time entry 103 (1 h on 2026-03-05) cannot be billed: project 'X' is closed",
        ),
        row(4, "tryton:invoice:SF-1/2026-02", "the period 2026-02 is closed", "closed_period"),
        row(5, "harvest:time_entry:104", "time entry 104 cannot be billed: no rate", age_h=1),
    ]
    groups = group_exceptions(rows, {1: "tryton", 2: "tryton", 3: "tryton", 5: "tryton"})
    assert [(g.count, g.system, g.error_class) for g in groups] == [
        (3, "tryton", "validation"),
        (1, "tryton", "validation"),  # another cause: no rate
        (1, "tryton", "closed_period"),  # not in the systems map: the entity's first part
    ]
    closed = groups[0]
    assert closed.cause == "time entry … (… h on …) cannot be billed: project … is closed"
    assert closed.ids == [2, 1, 3] and closed.example.id == 2  # oldest first
    assert closed.oldest == NOW - timedelta(hours=7)
    assert closed.entities == [f"harvest:time_entry:{n}" for n in (102, 101, 103)]
    assert len({g.key for g in groups}) == 3 and all(len(g.key) == 12 for g in groups)
    assert (
        group_exceptions(reversed(rows), {1: "tryton", 2: "tryton", 3: "tryton", 5: "tryton"})[
            0
        ].key
        == closed.key
    )


def test_normalising_keeps_the_words_and_drops_the_entity_and_uuids() -> None:
    message = "erp upsert of Record:8bd8bf2e-6e61-4042-843e-dc763df7ce44 failed 8 times: HTTP 503"
    assert normalise_message(message, "Record:8bd8bf2e-6e61-4042-843e-dc763df7ce44") == (
        "erp upsert of … failed … times: HTTP …"
    )
    assert normalise_message("id 9f1c0e2a-1111-2222-3333-444455556666 refused") == "id … refused"


def test_overview_counts_queue_lag_and_exceptions_by_impact() -> None:
    stats = StoreStats(
        inbox_by_status={"pending": 4, "applied": 10},
        commands_by_system={"erp": {"pending": 2, "parked": 3, "done": 9}, "psa": {"done": 1}},
        commands_by_status={},
        open_exceptions_by_class={"validation": 2, "retries_exhausted": 1},
        oldest_pending_inbox=NOW - timedelta(seconds=90),
    )
    rows = [row(1, "a:b", "x"), row(2, "a:c", "y")]
    view = overview(
        stats,
        rows,
        ["erp", "psa", "crm"],
        {"erp": "open", "psa": "closed"},
        {"erp": "-", "psa": "98 of 100 left"},
        None,
        NOW,
    )
    erp, psa, crm = view.systems
    assert (erp.breaker, erp.pending, erp.parked, erp.healthy) == ("open", 2, 3, False)
    assert (psa.quota, psa.healthy) == ("98 of 100 left", True)
    assert (crm.breaker, crm.quota, crm.pending) == ("unknown", "-", 0)
    assert view.inbox_pending == 4 and view.lag_s == 90.0
    assert view.exceptions_by_class == {"retries_exhausted": 1, "validation": 2}
    assert view.exceptions_by_impact == {"revenue": 2} and view.open_exceptions == 3


DEAL = "0065g00000DEAL1AAA"
KEY = f"SF-{DEAL}"


def states() -> list[FlowState]:
    systems = {"crm": "salesforce", "psa": "harvest", "erp": "tryton"}
    return [
        FlowState(
            "mobilize",
            "engagement:c-1",
            "mobilized",
            {
                "deal_id": DEAL,
                "deal_entity": f"salesforce:Opportunity:{DEAL}",
                "project_key": KEY,
                "systems": systems,
                "customer": {"crm_id": "001A", "legal_name": "Beta Systems AG"},
                "erp_customer_code": "C-7",
            },
        ),
        FlowState(
            "bill_time",
            "time:1",
            "recorded",
            {
                "project_code": KEY,
                "hours": "7.5",
                "entity": "harvest:time_entry:1",
            },
        ),
        FlowState(
            "bill_time",
            "time:2",
            "held",
            {"project_code": KEY, "hours": "2", "entity": "harvest:time_entry:2"},
        ),
        FlowState(
            "invoice",
            f"billing:{KEY}",
            "open",
            {
                "project_key": KEY,
                "invoices": {f"{KEY}/2026-03": {"number": "INV-0042"}},
            },
        ),
        FlowState(
            "mobilize",
            "engagement:c-2",
            "blocked",
            {
                "deal_id": "0065g00000OTHERAAA",
                "deal_entity": "salesforce:Opportunity:0065g00000OTHERAAA",
                "problems": ["the account's tax id is missing"],
                "systems": systems,
            },
        ),
    ]


def test_engagements_are_found_by_client_deal_project_or_invoice() -> None:
    s = states()
    assert deal_keys(s) == [
        ("salesforce", "Opportunity", DEAL),
        ("salesforce", "Opportunity", "0065g00000OTHERAAA"),
    ]
    deals = {
        ("salesforce", "Opportunity", "0065g00000OTHERAAA"): {
            "name": "Gamma review",
            "customer": {"legal_name": "Gamma Labs AG"},
        }
    }
    found = index(s, deals)
    assert [(e.client, e.deal_name) for e in found] == [
        ("Beta Systems AG", ""),
        ("Gamma Labs AG", "Gamma review"),
    ]
    for text in ("beta sys", DEAL[-8:], KEY.lower(), "INV-0042", f"{KEY}/2026-03"):
        assert [e.deal_id for e in search(found, text)] == [DEAL], text
    assert [e.client for e in search(found, "gamma")] == ["Gamma Labs AG"]
    assert search(found, "nobody") == [] and len(search(found, "  ")) == 2
    gamma = found[1]
    assert gamma.status.blockers == ["the account's tax id is missing"]


def test_a_timeline_orders_stages_and_tells_what_was_sent_and_what_failed() -> None:
    beta = next(e for e in index(states(), {}) if e.deal_id == DEAL)
    entities = related_entities(beta)
    assert f"salesforce:Opportunity:{DEAL}" in entities and f"tryton:project:{KEY}" in entities
    assert "tryton:customer:C-7" in entities and f"tryton:invoice:{KEY}/2026-03" in entities
    assert "harvest:time_entry:2" in entities

    def command(
        i: int, op: str, system: str, entity: str, status: CommandStatus, error: str | None = None
    ) -> CommandRow:
        c = Command(system, op, "b", f"k{i}", {}, entity, Impact.REVENUE)
        return CommandRow(
            i, c, "mobilize", status, 1, False, None, NOW + timedelta(minutes=i), None, None, error
        )

    commands = [
        command(1, "upsert_project", "harvest", f"harvest:project:{KEY}", CommandStatus.DONE),
        command(2, "match_customer", "tryton", "tryton:customer:001A", CommandStatus.DONE),
        command(
            3,
            "post_invoice",
            "tryton",
            f"tryton:invoice:{KEY}/2026-03",
            CommandStatus.PARKED,
            "period closed",
        ),
    ]
    audit = [
        AuditEntry(
            NOW,
            "key:alice",
            "replay",
            f"tryton:invoice:{KEY}/2026-03",
            {"reason": "reopened"},
            None,
        )
    ]
    failure = row(9, f"tryton:invoice:{KEY}/2026-03", "period closed", "closed_period")
    events = timeline(beta, commands, audit, [failure])
    stages = [e.stage for e in events]
    assert stages == sorted(
        stages, key=["Closed won", "Customer", "Projects", "Time", "Invoices", "Payments"].index
    )
    titles = [(e.stage, e.title, e.tone) for e in events]
    assert ("Customer", "Match customer", "ok") in titles
    assert ("Projects", "Upsert project", "ok") in titles
    assert ("Invoices", "Post invoice", "failed") in titles
    assert ("Invoices", "Invoice INV-0042", "ok") in titles
    assert ("Invoices", "Replay by key:alice", "muted") in titles
    assert ("Invoices", "Exception 9 (closed_period, open)", "failed") in titles
    time = next(e for e in events if e.stage == "Time")
    assert (
        time.tone == "blocked"
        and "1 held, 1 recorded" in time.detail
        and "7.5 h recorded" in time.detail
    )
    assert next(e for e in events if e.title == "Post invoice").detail == "parked: period closed"
    assert beta.status.hours_recorded == Decimal("7.5")
