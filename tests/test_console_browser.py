"""The operations console in a real Chromium (Debian's, driven by Playwright) against a real
hub process (``closeloop run``) with sandboxes: the Salesforce sandbox holds a closed-won
deal whose account lacks its tax id (Mobilize blocks it, no ERP needed), and a memory
sandbox ERP that answers 503 until it is "fixed" parks a group of mirrored records.

Screenshots of every page go to ``$CLOSELOOP_TEST_ARTIFACTS`` (default
``.artifacts/console/`` in the checkout)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from closeloop.domain.access import AccessRole
from closeloop.engine.access import Access
from closeloop.ports.clock import SystemClock
from closeloop.store import migrate
from closeloop.store.sql import SqlStore
from tests.conftest import REPO, Sandbox, free_port, wait_for, wait_http
from tests.salesforce_support import Api as SalesforceApi
from tests.salesforce_support import running_salesforce

pytestmark = pytest.mark.timeout(180)
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
PAST = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
BETA, GAMMA = "0015g00000BETA0AAA", "0015g00000GAMA0AAA"
DEAL_BETA, DEAL_GAMMA = "0065g00000DEAL1AAA", "0065g00000DEAL2AAA"
RECORDS = ["r-1", "r-2", "r-3"]
ARTIFACTS = Path(os.environ.get("CLOSELOOP_TEST_ARTIFACTS") or REPO / ".artifacts" / "console")


@dataclass
class Console:
    base: str
    keys: dict[str, str]
    erp: Sandbox
    legacy: Sandbox
    browser: Browser

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def signed_in(self, role: str) -> tuple[BrowserContext, Page]:
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{self.base}/console")
        page.fill("#key", self.keys[role])
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        return context, page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def seed() -> dict[str, Any]:
    def account(rid: str, name: str, country: str) -> dict[str, Any]:
        return {  # no Tax_Id__c: Mobilize blocks the deal
            "Id": rid,
            "Name": name,
            "Legal_Name__c": name,
            "BillingCountry": country,
            "BillingCity": "Zurich",
            "CurrencyIsoCode": "EUR",
            "SystemModstamp": PAST,
        }

    def deal(rid: str, account_id: str, name: str) -> dict[str, Any]:
        return {
            "Id": rid,
            "Name": name,
            "AccountId": account_id,
            "StageName": "Closed Won",
            "CloseDate": "2026-02-27",
            "CurrencyIsoCode": "EUR",
            "Start_Date__c": "2026-03-02",
            "Billing_Method__c": "Time and Materials",
            "Finance_Approval__c": "Not Required",
            "SystemModstamp": PAST,
        }

    def line(deal_id: str) -> dict[str, Any]:
        return {
            "OpportunityId": deal_id,
            "Product2Id": "01t5g00000CONS0AAA",
            "Quantity": 60,
            "UnitPrice": "150.00",
            "Role__c": "Auditor",
            "CurrencyIsoCode": "EUR",
        }

    return {
        "Account": [
            account(BETA, "Beta Systems AG", "Switzerland"),
            account(GAMMA, "Gamma Labs AG", "Switzerland"),
        ],
        "Product2": [{"Id": "01t5g00000CONS0AAA", "Name": "Consulting"}],
        "Opportunity": [
            deal(DEAL_BETA, BETA, "Beta audit"),
            deal(DEAL_GAMMA, GAMMA, "Gamma review"),
        ],
        "OpportunityLineItem": [line(DEAL_BETA), line(DEAL_GAMMA)],
    }


def make_keys(url: str) -> dict[str, str]:
    store = SqlStore.from_url(url)
    try:
        migrate.upgrade(store.engine)
        access = Access(store, SystemClock())
        return {
            "operator": access.create("alice", AccessRole.OPERATOR, "test", None).token,
            "viewer": access.create("victor", AccessRole.VIEWER, "test", None).token,
        }
    finally:
        store.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    tmp = tmp_path_factory.mktemp("console")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    sandboxes = [Sandbox(name) for name in ("psa", "erp", "legacy")]
    psa, erp, legacy = sandboxes
    process = None
    try:
        with running_salesforce(tmp / "sf") as sf, sync_playwright() as playwright:
            assert SalesforceApi(sf).admin("POST", "seed", json=seed()).status_code == 200
            erp.http.put("/faults", json={"server_error": 1.0}).raise_for_status()
            entry, port = sf.as_json(), free_port()
            url = f"sqlite:///{tmp / 'hub.db'}"
            keys = make_keys(url)
            config = tmp / "closeloop.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "database_url": url,
                        "http": {"port": port},
                        "worker": {
                            "poll_interval_s": 0.2,
                            "idle_wait_s": 0.05,
                            "retry_base_delay_s": 0.05,
                            "retry_max_delay_s": 0.2,
                            "retry_deadline_s": 1.0,
                            "breaker_cooldown_s": 0.3,
                        },
                        "systems": {
                            "salesforce": {
                                "kind": "salesforce",
                                "url": entry["instance_url"],
                                "client_id": entry["client_id"],
                                "client_secret": entry["client_secret"],
                                "user": entry["username"],
                                "password": entry["password"],
                                "organization_id": entry["organization_id"],
                                "ca_bundle": entry["ca_bundle"],
                                "objects": ["Opportunity"],
                            },
                            "psa": {"kind": "memory", "url": psa.url, "objects": []},
                            "erp": {"kind": "memory", "url": erp.url, "objects": []},
                            "legacy": {"kind": "memory", "url": legacy.url},
                        },
                        "roles": {"psa": {"systems": ["psa"]}, "erp": {"systems": ["erp"]}},
                        "flows": {"mobilize": {}},
                        "mirrors": [{"source": "legacy", "object": "Record", "target": "erp"}],
                    }
                )
            )
            process = subprocess.Popen(
                [sys.executable, "-m", "closeloop.cli", "run", "-c", str(config)],
                stderr=(tmp / "hub.log").open("w"),
            )
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz")
            for rid in RECORDS:
                legacy.http.put(f"/records/Record/{rid}", json={"name": f"Contract {rid}"})
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield Console(base, keys, erp, legacy, browser)
            finally:
                browser.close()
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
                process = None
    finally:
        if process is not None:
            process.kill()
            process.wait()
        for sandbox in sandboxes:
            sandbox.stop()


def open_exceptions(c: Console) -> list[dict[str, Any]]:
    with c.api(c.keys["viewer"]) as api:
        listed: list[dict[str, Any]] = api.get("/api/v1/exceptions").json()["items"]
    return listed


def erp_parked(c: Console) -> list[dict[str, Any]]:
    """The open exceptions of the ERP outage, once all three records are parked."""
    found = [e for e in open_exceptions(c) if e["entity"].startswith("Record:")]
    return found if len(found) == len(RECORDS) else []


def test_sign_in_and_read_why_a_deal_is_blocked(console: Console) -> None:
    context = console.browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{console.base}/")  # the root leads to the console, which asks to sign in
    expect(page).to_have_url(f"{console.base}/console/sign-in?next=%2Fconsole")
    page.fill("#key", "clk_not-a-key")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shot(page, "01-sign-in")
    page.fill("#key", console.keys["operator"])
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("header .who")).to_contain_text("alice · operator")
    expect(page.locator("#systems")).to_contain_text("salesforce")

    wait_for(
        lambda: any("closed-won deal blocked" in e["message"] for e in open_exceptions(console))
    )
    page.click("text=Engagements")
    page.fill("input[name=q]", "beta sys")
    page.press("input[name=q]", "Enter")
    rows = page.locator("#engagements tr")
    expect(rows).to_have_count(2)  # the header and Beta only: Gamma does not match
    expect(rows.nth(1)).to_contain_text("blocked")
    shot(page, "02-engagements-search")
    page.click("text=Beta Systems AG")
    expect(page.get_by_role("heading", name="Beta Systems AG · Beta audit")).to_be_visible()
    expect(page.locator("#blockers")).to_contain_text("the account's tax id is missing")
    expect(page.locator("#timeline")).to_contain_text("Deal Beta audit closed won on 2026-02-27")
    expect(page.locator("#timeline")).to_contain_text("Update engagement")  # the CRM was told
    expect(page.locator("#engagement-exceptions")).to_contain_text("closed-won deal blocked")
    shot(page, "03-engagement-timeline")
    context.close()


def test_replay_a_group_after_the_erp_is_fixed(console: Console) -> None:
    parked = wait_for(lambda: erp_parked(console))
    context, page = console.signed_in("operator")
    expect(page.locator("#systems tr", has_text="erp")).to_contain_text("needs attention")
    shot(page, "04-overview-erp-down")
    page.click("text=Exceptions")
    group = page.locator("section.group", has_text="in erp")
    expect(group).to_have_count(1)  # three records, one cause
    expect(group.locator(".count")).to_have_text(str(len(RECORDS)))
    group.locator("summary").click()
    for e in parked:
        expect(group).to_contain_text(e["entity"])
    shot(page, "05-exceptions-grouped")

    console.erp.http.put("/faults", json={}).raise_for_status()  # the ERP is back
    group.locator("input[name=reason]").fill("ERP maintenance is over")
    group.get_by_role("button", name=f"Replay all {len(RECORDS)}").click()
    expect(page.get_by_role("status")).to_contain_text(f"replayed {len(RECORDS)} of {len(RECORDS)}")
    expect(page.locator("section.group", has_text="in erp")).to_have_count(0)
    wait_for(lambda: len(console.erp.http.get("/effects").json()["effects"]) == len(RECORDS))
    page.reload()  # delivered this time: no new exception, the group stays gone
    expect(page.locator("section.group", has_text="in erp")).to_have_count(0)
    expect(page.locator("section.group", has_text="in salesforce")).to_have_count(1)
    shot(page, "06-exceptions-after-replay")

    page.goto(f"{console.base}/console/audit")
    expect(page.locator("#audit")).to_contain_text("key:alice")
    expect(page.locator("#audit tr", has_text="replay")).to_have_count(len(RECORDS))
    shot(page, "07-audit")
    page.goto(f"{console.base}/console/reconcile")
    page.check("input[name=repair]")
    page.get_by_role("button", name="Run reconciliation now").click()
    expect(page.get_by_role("heading", name="Reconciliation run")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("finished")
    shot(page, "08-reconcile-run")
    page.goto(f"{console.base}/console/reconcile")
    expect(page.locator("#runs")).to_contain_text("console · key:alice")
    shot(page, "09-reconcile-runs")
    context.close()


def test_a_viewer_sees_no_replay_and_is_refused(console: Console) -> None:
    wait_for(
        lambda: any("closed-won deal blocked" in e["message"] for e in open_exceptions(console))
    )
    context, page = console.signed_in("viewer")
    shot(page, "10-overview-viewer")
    page.click("text=Exceptions")
    group = page.locator("section.group", has_text="in salesforce")
    expect(group).to_have_count(1)
    expect(page.get_by_role("button", name="Replay all")).to_have_count(0)
    expect(page.locator("input[name=ids]")).to_have_count(0)
    shot(page, "11-exceptions-viewer")

    key = group.get_attribute("data-group")
    token = page.locator("header input[name=csrf_token]").get_attribute("value")
    assert key and token
    refused = context.request.post(
        f"{console.base}/console/exceptions/bulk",
        form={"csrf_token": token, "do": "replay:group", "group": key, "reason": "try"},
    )
    assert refused.status == 403 and "only an operator" in refused.text()
    blocked = next(e for e in open_exceptions(console) if e["entity"].startswith("salesforce:"))
    with console.api(console.keys["viewer"]) as api:
        answer = api.post(f"/api/v1/exceptions/{blocked['id']}/replay", json={"reason": "try"})
        assert answer.status_code == 403 and "this needs operator" in answer.json()["detail"]
        bulk = api.post("/console/exceptions/bulk", data={"do": "replay:group", "group": key})
        assert bulk.status_code == 403
    assert blocked["id"] in [e["id"] for e in open_exceptions(console)]  # still open
    context.close()


def test_a_form_post_without_its_csrf_token_is_refused(console: Console) -> None:
    wait_for(
        lambda: any("closed-won deal blocked" in e["message"] for e in open_exceptions(console))
    )
    context, page = console.signed_in("operator")
    page.click("text=Exceptions")
    key = page.locator("section.group", has_text="in salesforce").get_attribute("data-group")
    assert key
    before = {e["id"] for e in open_exceptions(console)}
    bulk = f"{console.base}/console/exceptions/bulk"
    form = {"do": "resolve:group", "group": key, "reason": "forged"}
    missing = context.request.post(bulk, form=form)
    assert missing.status == 403 and "CSRF" in missing.text()
    wrong = context.request.post(bulk, form={**form, "csrf_token": "forged"})
    assert wrong.status == 403
    out = context.request.post(f"{console.base}/console/sign-out", form={})
    assert out.status == 403
    assert {e["id"] for e in open_exceptions(console)} == before  # nothing was resolved
    page.goto(f"{console.base}/console/exceptions?error_class=nonsense")
    expect(page.get_by_role("alert")).to_contain_text("unknown filter value")
    page.goto(f"{console.base}/console")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("signed out")
    page.goto(f"{console.base}/console/exceptions")
    expect(page).to_have_url(f"{console.base}/console/sign-in?next=%2Fconsole%2Fexceptions")
    context.close()
