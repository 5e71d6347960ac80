"""Alerts: each condition reaches a real local SMTP server (aiosmtpd) and a real local
webhook receiver once (not once per exception), again only after it clears or the
re-notify interval passes; the daily digest once a day at its time; a failing channel is
retried at the next evaluation without blocking the other; one hub of several sends; the
console page and ``closeloop alerts test``; configuration errors name the key."""

from __future__ import annotations

import hashlib
import hmac
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import trustme
import yaml
from sqlalchemy import select

from closeloop.bootstrap import Hub, build_http_app, build_hub
from closeloop.config import ConfigError, Settings, load_settings
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.flows.mirror import MirrorFlow, record_mapper
from closeloop.ports.flows import Binding
from closeloop.ports.store import ExceptionQuery, NewException, ReconcileRun
from closeloop.store.db import create_db_engine
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.tables import alert_conditions
from tests.alerts_support import ManualClock, SmtpServer, WebhookReceiver
from tests.conftest import REPO, db_upgrade, free_port, wait_for, wait_http
from tests.memory_system import MemorySystem

SECRET = "hook-secret"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def alerts_config(smtp_port: int, hook_url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "every_s": 60,
        "renotify_h": 48,
        "channels": {
            "ops-mail": {
                "kind": "email",
                "host": "127.0.0.1",
                "port": smtp_port,
                "sender": "hub@firm.example",
                "to": ["ops@firm.example", "finance@firm.example"],
                "timeout_s": 5,
            },
            "chat": {"kind": "webhook", "url": hook_url, "secret": SECRET, "timeout_s": 5},
        },
        "rules": {
            "open_exceptions_above": 3,
            "sla_h": {"revenue": 24},
            "breaker_open_min": 10,
            "drift": True,
        },
    }
    config.update(overrides)
    return config


def make_alert_hub(url: str, clock: ManualClock, alerts: dict[str, Any]) -> Hub:
    crm, erp = MemorySystem("crm"), MemorySystem("erp")
    settings = Settings(database_url=url, alerts=alerts)
    return build_hub(
        settings,
        connectors={"crm": crm, "erp": erp},
        bindings=[Binding("crm", "Record", "record", record_mapper, (MirrorFlow("erp"),))],
        clock=clock,
        upgrade=True,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub(
    db_url: str, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> Iterator[Hub]:
    """A hub on each backend (the claim and the state are SQL)."""
    made = make_alert_hub(db_url, clock, alerts_config(smtp.port, receiver.url))
    yield made
    made.close()


def open_exceptions(hub: Hub, n: int, impact: Impact = Impact.REVENUE) -> list[int]:
    with hub.store.transaction() as tx:
        return tx.open_exceptions(
            [
                NewException(
                    ExceptionClass.VALIDATION, impact, f"erp:invoice:SF-{i}/2026-11", f"refused {i}"
                )
                for i in range(n)
            ],
            hub.clock.now(),
        )


def resolve_all(hub: Hub) -> None:
    rows = hub.operations.find_exceptions(ExceptionQuery(limit=1000))
    with hub.store.transaction() as tx:
        tx.set_exception_status([r.id for r in rows], "resolved", "t", "fixed", hub.clock.now())


def reconcile_run(hub: Hub, mismatches: int) -> int:
    now = hub.clock.now()
    counts = {"projects": {"mismatch": mismatches}} if mismatches else {"projects": {}}
    run = ReconcileRun(now, now, "schedule", "schedule", ("projects",), False, False, {}, {},
                       counts, "ok")  # fmt: skip
    with hub.store.transaction() as tx:
        return tx.save_reconcile_run(run)


def trip_breaker(hub: Hub, system: str = "erp") -> None:
    breaker = hub.dispatcher.gates[system].breaker
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def subjects(smtp: SmtpServer) -> list[str]:
    return [str(m["Subject"]) for _, _, m in smtp.messages]


def hook_keys(receiver: WebhookReceiver) -> list[str]:
    return [r.json()["conditions"][0]["key"] for r in receiver.requests]


def test_each_condition_fires_once_to_email_and_webhook_not_once_per_exception(
    hub: Hub, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    alerter = hub.alerter()
    open_exceptions(hub, 6)  # six revenue exceptions: above 3, and late once 24 h pass
    trip_breaker(hub)
    run_id = reconcile_run(hub, 2)
    first = alerter.run_due()
    assert first.firing == ("open_exceptions", "drift")  # SLA and breaker not yet
    clock.advance(hours=25)
    second = alerter.run_due()
    assert set(second.firing) == {"open_exceptions", "sla:revenue", "breaker:erp", "drift"}
    assert alerter.run_due().sent == ()  # still firing: nothing more

    assert subjects(smtp) == [
        "[closeloop] 6 open business exceptions (threshold 3)",
        f"[closeloop] reconciliation run {run_id} found 2 drift(s)",
        "[closeloop] 6 exception(s) of revenue impact open longer than 24 h "
        "(oldest 25 h: erp:invoice:SF-0/2026-11)",
        "[closeloop] erp: circuit breaker open for 1500 min (limit 10 min): calls to it are paused",
    ]
    sender, to, message = smtp.messages[0]
    assert sender == "hub@firm.example"
    assert to == ["ops@firm.example", "finance@firm.example"]
    assert "firing since 2026-12-04 09:00 UTC" in message.get_content()
    assert message["X-Closeloop-Kind"] == "alert"

    assert hook_keys(receiver) == ["open_exceptions", "drift", "sla:revenue", "breaker:erp"]
    sla = receiver.requests[2]
    body = sla.json()
    assert body["text"].startswith("closeloop alert [sla:revenue]: 6 exception(s) of revenue")
    assert body["kind"] == "alert" and body["at"] == "2026-12-05T10:00:00+00:00"
    detail = body["conditions"][0]["detail"]
    assert (detail["late"], detail["sla_h"], detail["oldest_h"]) == (6, 24, 25.0)
    assert len(detail["examples"]) == 5
    stamp, mac = sla.headers["x-closeloop-signature"].split(",")
    expected = hmac.new(SECRET.encode(), f"{stamp[2:]}.".encode() + sla.body, hashlib.sha256)
    assert stamp == f"t={int(clock.at.timestamp())}" and mac == f"v1={expected.hexdigest()}"
    assert body["conditions"][0]["detail"]["impact"] == "revenue"


def test_a_cleared_condition_that_fires_again_is_sent_again_and_renotified_after_its_interval(
    hub: Hub, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    alerter = hub.alerter()
    open_exceptions(hub, 4, Impact.CLIENT)
    assert alerter.run_due().sent == (("open_exceptions", "ops-mail"), ("open_exceptions", "chat"))
    resolve_all(hub)
    clock.advance(minutes=1)
    cleared = alerter.run_due()
    assert cleared.firing == () and cleared.sent == ()
    (state,) = alerter.store.states()
    assert not state.firing and state.cleared_at == clock.at
    open_exceptions(hub, 5, Impact.CLIENT)
    clock.advance(minutes=1)
    assert alerter.run_due().sent == (("open_exceptions", "ops-mail"), ("open_exceptions", "chat"))
    clock.advance(hours=47, minutes=59)
    assert alerter.run_due().sent == ()  # within renotify_h (48 h)
    clock.advance(minutes=1)
    assert len(alerter.run_due().sent) == 2  # 48 h after it was last sent
    assert (
        subjects(smtp)[-1] == "[closeloop] still firing: 5 open business exceptions (threshold 3)"
    )
    assert len(receiver.requests) == 3


def test_the_digest_goes_once_a_day_at_its_time(
    sqlite_url: str, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    clock.at = datetime(2026, 12, 4, 7, 0, tzinfo=UTC)
    config = alerts_config(smtp.port, receiver.url, digest_at_utc="08:00")
    hub = make_alert_hub(sqlite_url, clock, config)
    try:
        alerter = hub.alerter()
        open_exceptions(hub, 4, Impact.CLIENT)  # no SLA for client impact
        alerter.run_due()  # the alert itself; the digest's first slot is 08:00 today
        assert [r.json()["kind"] for r in receiver.requests] == ["alert"]
        clock.advance(minutes=59, seconds=59)
        assert alerter.run_due().sent == ()
        clock.advance(seconds=1)  # 08:00
        assert alerter.run_due().sent == (("digest", "ops-mail"), ("digest", "chat"))
        for _ in range(3):
            clock.advance(hours=7)  # 15:00, 22:00, 05:00 next day
            assert alerter.run_due().sent == ()
        clock.advance(hours=3, minutes=1)  # 08:01 the next day
        assert alerter.run_due().sent == (("digest", "ops-mail"), ("digest", "chat"))
        digests = [r.json() for r in receiver.requests if r.json()["kind"] == "digest"]
        assert len(digests) == 2
        assert digests[0]["title"] == "daily digest: 1 condition(s) firing"
        assert "- [open_exceptions] 4 open business exceptions (threshold 3)" in digests[0]["text"]
        assert "last sent 2026-12-04 07:00 UTC" in digests[0]["text"]
        assert subjects(smtp)[-1] == "[closeloop] daily digest: 1 condition(s) firing"
    finally:
        hub.close()


def test_a_failing_webhook_is_retried_later_and_does_not_block_email(
    hub: Hub, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    alerter = hub.alerter()
    receiver.status = 500
    open_exceptions(hub, 4)
    with structlog.testing.capture_logs() as logs:
        first = alerter.run_due()
    assert first.sent == (("open_exceptions", "ops-mail"),)
    assert first.failed == (("open_exceptions", "chat"),)
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["channel"] == "chat" and "HTTP 500" in warning["error"]
    clock.advance(minutes=1)
    again = alerter.run_due()  # retried, email not sent twice
    assert (again.sent, again.failed) == ((), (("open_exceptions", "chat"),))
    (state,) = alerter.store.states()
    assert state.owed == ("chat",)
    receiver.status = 200
    clock.advance(minutes=1)
    assert alerter.run_due().sent == (("open_exceptions", "chat"),)
    clock.advance(minutes=1)
    assert alerter.run_due().sent == ()
    assert len(smtp.messages) == 1 and len(receiver.requests) == 3


def test_an_smtp_server_that_is_down_is_retried_once_it_is_up(
    sqlite_url: str, clock: ManualClock, receiver: WebhookReceiver
) -> None:
    port = free_port()  # nothing listens yet
    hub = make_alert_hub(sqlite_url, clock, alerts_config(port, receiver.url))
    server = SmtpServer(port)
    try:
        alerter = hub.alerter()
        open_exceptions(hub, 4)
        down = alerter.run_due()
        assert down.sent == (("open_exceptions", "chat"),)
        assert down.failed == (("open_exceptions", "ops-mail"),)
        server.start()
        clock.advance(minutes=1)
        assert alerter.run_due().sent == (("open_exceptions", "ops-mail"),)
        assert subjects(server) == ["[closeloop] 4 open business exceptions (threshold 3)"]
        assert len(receiver.requests) == 1
    finally:
        server.controller.stop(no_assert=True)
        hub.close()


def test_only_the_hub_holding_the_claim_sends(
    hub: Hub, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    first, second = hub.alerter(), hub.alerter()  # two hub processes' alerters, one database
    open_exceptions(hub, 4)
    assert first.run_due().evaluated
    assert second.run_due() == type(second.run_due())(False)
    clock.advance(minutes=4)
    assert first.run_due().evaluated and not second.run_due().evaluated
    clock.advance(minutes=6)  # the first hub stopped: its claim (5 min) ran out
    took_over = second.run_due()
    assert took_over.evaluated and took_over.sent == ()  # the shared state: sent already
    assert not first.run_due().evaluated
    assert len(smtp.messages) == 1 and len(receiver.requests) == 1


def test_email_with_starttls_and_login(
    sqlite_url: str, clock: ManualClock, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    port = free_port()
    server = SmtpServer(port, tls=server_context, login=("hub", "s3cret")).start()
    config = alerts_config(port, receiver.url)
    mail = config["channels"]["ops-mail"]
    mail.update(starttls=True, username="hub", password="s3cret", ca_bundle=str(bundle))
    hub = make_alert_hub(sqlite_url, clock, config)
    try:
        alerter = hub.alerter()
        assert alerter.test() == {"ops-mail": None, "chat": None}
        assert server.logins == ["hub"]
        assert subjects(server) == ["[closeloop] test notification to ops-mail"]
        mail["password"] = "wrong"
        bad = make_alert_hub(sqlite_url, clock, config)
        try:
            problem = bad.alerter().test()["ops-mail"]
        finally:
            bad.close()
        assert problem is not None and "authentication" in problem.lower()
    finally:
        server.stop()
        hub.close()


def test_the_quota_rule_reads_the_shared_window_of_a_harvest_account(
    sqlite_url: str, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    rules = {"quota_left_below": 0.1}
    settings = Settings(
        database_url=sqlite_url,
        systems={
            "harvest": {
                "kind": "harvest",
                "url": "http://127.0.0.1:9/v2",  # never called
                "token": "t",
                "account_id": "42",
                "requests_per_window": 20,
                "window_s": 3600,
            }
        },
        alerts=alerts_config(smtp.port, receiver.url, rules=rules),
    )
    hub = build_hub(settings, bindings=[], clock=clock, upgrade=True)
    try:
        client = hub.registry.connector("harvest").client  # type: ignore[attr-defined]
        limit = SqlSharedRateLimit(hub.store.engine)  # what every worker's calls go through
        alerter = hub.alerter()
        for _ in range(18):
            limit.take(client.rate_limit_key, 20, 3600)
        assert alerter.run_due().firing == ()  # 10 % left: not below
        limit.take(client.rate_limit_key, 20, 3600)
        assert alerter.run_due().firing == ("quota:harvest",)
        assert subjects(smtp) == ["[closeloop] harvest: 5% of its quota left (alert below 10%)"]
    finally:
        hub.close()


def test_the_console_shows_channels_rules_and_what_fires(
    hub: Hub, clock: ManualClock, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    from fastapi.testclient import TestClient

    from tests.test_console_forms import signed_in

    open_exceptions(hub, 4)
    hub.alerter().run_due()
    anonymous = TestClient(build_http_app(hub), base_url="http://hub")
    away = anonymous.get("/console/alerts", follow_redirects=False)
    assert away.status_code == 303 and "/console/sign-in" in away.headers["location"]
    browser, _ = signed_in(hub, "viewer")
    page = browser.get("/console/alerts")
    assert page.status_code == 200
    text = page.text
    assert "<code>open_exceptions</code>" in text
    assert "4 open business exceptions (threshold 3)" in text
    assert text.count("2026-12-04 09:00:00 UTC") == 2  # firing since, last sent
    assert "ops-mail</strong>: email via 127.0.0.1:" in text
    assert "to ops@firm.example, finance@firm.example" in text
    assert "chat</strong>: webhook to http://127.0.0.1, signed" in text
    assert SECRET not in text
    assert "an exception of revenue impact open longer than 24 h" in text
    assert "a circuit breaker open longer than 10 min" in text
    assert 'href="/console/alerts" class="here"' in text


def test_alerts_test_sends_to_every_channel_from_the_command_line(
    tmp_path: Path, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    config = tmp_path / "closeloop.yaml"
    alerts = alerts_config(smtp.port, receiver.url)
    config.write_text(
        yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'hub.db'}", "alerts": alerts})
    )
    db_upgrade(config)  # like every command but db upgrade, it needs the current schema
    done = cli(config, "alerts", "test")
    assert done.returncode == 0, done.stderr
    assert "ops-mail: sent" in done.stdout and "chat: sent" in done.stdout
    assert subjects(smtp) == ["[closeloop] test notification to ops-mail"]
    assert [r.json()["kind"] for r in receiver.requests] == ["test"]
    receiver.status = 503
    failed = cli(config, "alerts", "test")
    assert failed.returncode == 1 and "chat: failed: chat: HTTP 503" in failed.stderr


def test_closeloop_run_evaluates_and_sends_each_condition_once(
    tmp_path: Path, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    alerts = alerts_config(smtp.port, receiver.url, every_s=0.1)
    setup = make_alert_hub(database, ManualClock(datetime.now(UTC)), alerts)
    open_exceptions(setup, 5, Impact.CLIENT)
    setup.close()
    config = tmp_path / "closeloop.yaml"
    port = free_port()
    config.write_text(
        yaml.safe_dump({"database_url": database, "http": {"port": port}, "alerts": alerts})
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "closeloop.cli", "run", "-c", str(config)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert receiver.arrived.wait(60), "no alert from closeloop run"
        engine = create_db_engine(database)
        try:
            later = wait_for(lambda: _evaluated_after_sending(engine))
        finally:
            engine.dispose()
        assert later  # a later evaluation saw it still firing, and sent nothing
        assert hook_keys(receiver) == ["open_exceptions"]
        assert subjects(smtp) == ["[closeloop] 5 open business exceptions (threshold 3)"]
        wait_http(f"http://127.0.0.1:{port}/healthz")  # serving: SIGTERM stops it cleanly
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _evaluated_after_sending(engine: Any) -> bool:
    with engine.connect() as conn:
        row = conn.execute(select(alert_conditions)).first()
    return bool(row and row.sent_at and row.seen_at > row.sent_at)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "closeloop.cli", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        (
            {"channels": {"m": {"kind": "email", "host": "h", "sender": "a@b", "to": []}}},
            "alerts.channels.m.email.to: List should have at least 1 item",
        ),
        (
            {"channels": {"m": {"kind": "email", "host": "h", "sender": "nobody", "to": ["a@b"]}}},
            "alerts.channels.m.email.sender: String should match pattern",
        ),
        (
            {
                "channels": {
                    "m": {
                        "kind": "email",
                        "host": "h",
                        "sender": "a@b",
                        "to": ["a@b"],
                        "ssl": True,
                        "starttls": True,
                    }
                }
            },
            "alerts.channels.m.email: Value error, choose ssl (implicit TLS) or starttls",
        ),
        (
            {"channels": {"w": {"kind": "webhook", "url": "not a url"}}},
            "alerts.channels.w.webhook.url: Input should be a valid URL",
        ),
        (
            {"channels": {"w": {"kind": "pager", "url": "http://x"}}},
            "alerts.channels.w: Input tag 'pager' found using 'kind' does not match",
        ),
        (
            {"rules": {"open_exceptions_above": 5}},
            "alerts: Value error, alerts.rules are set but no alerts.channels would carry them",
        ),
        (
            {"rules": {"sla_h": {"urgent": 4}}},
            "alerts.rules.sla_h.urgent.[key]: Input should be 'revenue', 'client'",
        ),
        ({"rules": {"quota_left_below": 5}}, "alerts.rules.quota_left_below: Input should be less"),
        (
            {"digest_at_utc": "25:00"},
            "alerts.digest_at_utc: Input should be in a valid time format",
        ),
    ],
)
def test_configuration_errors_name_the_key(
    tmp_path: Path, alerts: dict[str, Any], expected: str
) -> None:
    config = tmp_path / "closeloop.yaml"
    config.write_text(yaml.safe_dump({"alerts": alerts}))
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert expected in str(caught.value), str(caught.value)


def test_a_valid_section_reads_as_configured(tmp_path: Path) -> None:
    config = tmp_path / "closeloop.yaml"
    alerts = alerts_config(2525, "https://hooks.example.com/x", digest_at_utc="07:30")
    config.write_text(yaml.safe_dump({"alerts": alerts}))
    read = load_settings(config).alerts
    assert read.digest_at_utc == time(7, 30)
    assert read.rules.sla_h == {Impact.REVENUE: 24.0}
    assert sorted(read.channels) == ["chat", "ops-mail"]
    assert timedelta(hours=read.renotify_h) == timedelta(days=2)


def test_the_example_configurations_alerts_block_is_valid() -> None:
    lines = (REPO / "closeloop.example.yaml").read_text().splitlines()
    start = lines.index("# alerts:")
    block = []
    for line in lines[start:]:
        if not line.startswith("# ") or (block and not line.startswith("#  ")):
            break
        block.append(line[2:])
    alerts = yaml.safe_load("\n".join(block))["alerts"]
    read = Settings(alerts=alerts).alerts
    assert sorted(read.channels) == ["chat", "ops_mail"]
    assert len(read.rules.describe()) == 6  # each rule, two SLAs


def test_a_breaker_stays_open_through_failed_probes_until_a_success() -> None:
    from closeloop.engine.breaker import BreakerState, CircuitBreaker

    clock = ManualClock()
    breaker = CircuitBreaker(2, 30.0, clock.monotonic)
    breaker.record_failure()
    assert breaker.open_since is None
    breaker.record_failure()
    opened = clock.mono
    assert breaker.open_since == opened
    clock.advance(seconds=31)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()  # the probe failed: open again, still since the first time
    assert breaker.state is BreakerState.OPEN and breaker.open_since == opened
    clock.advance(seconds=31)
    breaker.record_success()
    assert breaker.open_since is None


def test_run_once_evaluates_the_alerts_and_the_next_pass_sends_nothing_again(
    tmp_path: Path, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    alerts = alerts_config(smtp.port, receiver.url, every_s=60)
    setup = make_alert_hub(database, ManualClock(datetime.now(UTC)), alerts)
    open_exceptions(setup, 5, Impact.CLIENT)
    setup.close()
    config = tmp_path / "closeloop.yaml"
    config.write_text(yaml.safe_dump({"database_url": database, "alerts": alerts}))
    command = [sys.executable, "-m", "closeloop.cli", "run", "--once", "-c", str(config)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert hook_keys(receiver) == ["open_exceptions"]
    # the pass gave its claim back: the next pass (another process) evaluates at once, sees
    # the condition still firing and sends nothing more
    engine = create_db_engine(database)
    try:
        with engine.connect() as conn:
            sent = conn.execute(select(alert_conditions)).one().sent_at
        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stderr
        with engine.connect() as conn:
            row = conn.execute(select(alert_conditions)).one()
    finally:
        engine.dispose()
    assert row.seen_at > sent and row.sent_at == sent
    assert hook_keys(receiver) == ["open_exceptions"]
    assert subjects(smtp) == ["[closeloop] 5 open business exceptions (threshold 3)"]
