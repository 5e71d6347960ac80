"""The operations console and reconciliation over Xero, in a real Chromium (Debian's, driven
by Playwright) against a real hub process (``closeloop run``) on the Salesforce, Harvest and
Xero sandboxes: a small firm whose every deal is routed to Xero (``roles.erp``: xero only) is
mobilized; then, as an operator, the overview shows Xero's quota and breaker, an engagement's
page its Xero contact and tracking option, the time refused by a Xero failing every call is
parked as one group naming xero and replayed from the console once Xero is back (each entry
then in Xero once), and a reconciliation started from the console reads Xero and reports the
one drift made on purpose (a contact renamed in Xero), with its owner and cause.

Screenshots go to ``$CLOSELOOP_TEST_ARTIFACTS`` (default ``.artifacts/console/``), named
``xero-*``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from closeloop.bootstrap import build_hub
from closeloop.config import load_settings
from closeloop.connectors.xero.marks import mark_of, project_of_wip
from closeloop.devtools import sandboxctl
from closeloop.devtools.demo.firm import Firm, make_firm, time_entries
from closeloop.devtools.demo.run import harvest_projects
from tests import xero_support
from tests.conftest import wait_for
from tests.p2c_support import QUICK_WORKER
from tests.test_console_browser import ARGS, CHROMIUM, make_keys, shot
from tests.test_xero_e2e import seed as seed_firm
from tests.test_xero_e2e import xero_server

pytestmark = pytest.mark.timeout(240)


@dataclass
class Hub:
    """The running hub, its systems and the firm on them."""

    base: str
    keys: dict[str, str]
    home: Path
    firm: Firm
    xero: xero_support.Api
    harvest: Any  # the Harvest client (the test's own reads)
    projects: dict[str, dict[str, Any]]  # Harvest's, by deal id
    browser: Browser

    def api(self) -> httpx.Client:
        token = self.keys["viewer"]
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def get(self, path: str, **params: Any) -> Any:
        with self.api() as api:
            answer = api.get(path, params=params)
            answer.raise_for_status()
            return answer.json()

    def signed_in(self) -> tuple[BrowserContext, Page]:
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{self.base}/console")
        page.fill("#key", self.keys["operator"])
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        return context, page

    def mobilized(self) -> set[str]:
        """The deals the firm expects mobilized (all valid ones but the one waiting for
        finance's approval)."""
        return set(self.firm.valid_deals) - {self.firm.needs_approval}


def config(home: Path, url: str) -> Path:
    """The sandboxes' ``closeloop.yaml`` with every deal routed to Xero, the four
    time-and-materials flows, retries that give up within seconds, and no scheduled
    reconciliation."""
    data: dict[str, Any] = yaml.safe_load((home / "closeloop.yaml").read_text())
    assert set(data["systems"]) == {"salesforce", "harvest", "xero"}
    data["database_url"] = url
    data["systems"]["xero"]["requests_per_window"] = xero_support.ROOMY["minute"]
    data["roles"] = {"erp": {"systems": ["xero"]}}
    data["flows"] = {"mobilize": {}, "bill_time": {}, "invoice": {"settle_s": 1}, "status_back": {}}
    data["worker"] = {
        **QUICK_WORKER,
        "poll_interval_s": 0.3,
        "retry_max_delay_s": 0.3,
        "retry_deadline_s": 2.0,
        "breaker_cooldown_s": 0.5,
    }
    data["reconcile"] = {"every_h": 0}
    path = home / "console-xero.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    home = tmp_path_factory.mktemp("console-xero")
    firm = make_firm(
        datetime.now(UTC).date(), clients=10, deals=12, consultants=5, seed=413, entities=False
    )
    process = None
    api = None
    try:
        state = sandboxctl.up(home, ("salesforce", "harvest", "xero"))
        sandboxctl.write_state(home, state)
        api = xero_support.Api(xero_server(home))
        api.admin("PUT", "limits", json=xero_support.ROOMY).raise_for_status()
        seed_firm(home, firm, api)
        url = f"sqlite:///{home / 'hub.db'}"
        keys = make_keys(url)
        path = config(home, url)
        process = subprocess.Popen(
            [sys.executable, "-m", "closeloop.cli", "run", "-c", str(path)],
            stderr=(home / "hub.log").open("w"),
        )
        base = f"http://127.0.0.1:{state['hub']['port']}"
        wait_for(lambda: process.poll() is not None or healthy(base), 30)
        assert process.poll() is None, (home / "hub.log").read_text()[-2000:]
        reader = build_hub(load_settings(path))  # the test's Harvest reads; runs nothing
        harvest = reader.registry.connector("harvest").client  # type: ignore[attr-defined]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                h = Hub(base, keys, home, firm, api, harvest, {}, browser)
                wait_for(lambda: stages(h) >= {d: "mobilized" for d in h.mobilized()}.items(), 90)
                h.projects = harvest_projects(reader, firm)
                try:
                    yield h
                finally:
                    browser.close()
        finally:
            reader.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        process = None
    finally:
        if process is not None:
            process.kill()
            process.wait()
        if api is not None:
            api.close()
        sandboxctl.down(home)


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stages(h: Hub) -> Any:
    """Each engagement's stage, by deal id, as the hub's API shows it."""
    listed = h.get("/api/v1/engagements", limit=500)["items"]
    return {e["deal_id"]: e["stage"] for e in listed}.items()


def xero_row(h: Hub) -> dict[str, Any]:
    systems = h.get("/api/v1/overview")["systems"]
    return next(s for s in systems if s["name"] == "xero")


def test_the_overview_shows_xeros_quota_and_breaker(hub: Hub) -> None:
    context, page = hub.signed_in()
    row = page.locator("#systems tr", has_text="xero")
    expect(row).to_have_count(1)
    limit = xero_support.ROOMY["minute"]
    expect(row).to_contain_text(f"of {limit} calls in the last minute")
    expect(row).to_contain_text("of 5000 calls in the last day (all workers)")
    expect(row).to_contain_text("closed (calls flow)")
    used = int(row.locator("td").nth(3).inner_text().split(" of ")[0])
    assert used > 0  # the hub's calls to Xero, counted
    shot(page, "xero-01-overview")
    context.close()


def test_an_engagement_shows_its_xero_contact_and_tracking_option(hub: Hub) -> None:
    deal_id = sorted(hub.mobilized())[0]
    key = f"SF-{deal_id}"
    client = next(
        e["client"]
        for e in hub.get("/api/v1/engagements", limit=500)["items"]
        if e["deal_id"] == deal_id
    )
    contacts = hub.xero.listed("Contacts")
    categories = hub.xero.call("GET", "TrackingCategories").json()["TrackingCategories"]
    option = next(
        o for c in categories if c["Name"] == "Project" for o in c["Options"] if o["Name"] == key
    )
    context, page = hub.signed_in()
    page.click("text=Engagements")
    page.fill("input[name=q]", client.split()[0].lower())
    page.press("input[name=q]", "Enter")
    expect(page.locator("#engagements tr", has_text=client).first).to_be_visible()
    shot(page, "xero-02-engagements")
    page.locator("#engagements a", has_text=client).first.click()
    expect(page.locator("h1")).to_contain_text(client)
    card = page.locator(".card").first
    expect(card).to_contain_text("erp = xero")
    expect(card).to_contain_text(f"project {key}")
    records = page.locator("#records")
    code = next(
        c for c in contacts if c.get("ContactNumber") and c["ContactID"] in records.inner_text()
    )["ContactNumber"]
    expect(records.locator("li", has_text="erp xero: customer")).to_contain_text(code)
    expect(records.locator("li", has_text=f"erp xero: project {key}")).to_contain_text(
        option["TrackingOptionID"]
    )
    expect(records.locator("li", has_text="psa harvest")).to_contain_text(
        str(hub.projects[deal_id]["id"])
    )
    customer = page.locator("#timeline .stage", has_text="Customer")
    expect(customer.locator(".sys", has_text="xero").first).to_be_visible()
    projects = page.locator("#timeline .stage", has_text="Projects")
    expect(
        projects.locator(".event", has_text="Upsert project").filter(has_text="xero")
    ).to_contain_text("done")
    shot(page, "xero-03-engagement")
    context.close()


def log_and_approve_time(h: Hub) -> set[str]:
    """Consultants log the last month of the quarter on the mobilized engagements; their
    managers approve all of it. Returns the entries' keys (``harvest-<id>``)."""
    first = h.firm.end.replace(day=1)
    mobilized = {d: p for d, p in h.projects.items() if d in h.mobilized()}
    entries = [e for e in time_entries(h.firm, mobilized) if e["spent_date"] >= first.isoformat()]
    sandboxctl.seed(h.home, "harvest", {"time_entries": entries})
    for person in h.firm.consultants:
        body = {"user_id": person["id"], "from": first.isoformat(), "to": h.firm.end.isoformat()}
        sandboxctl.harvest_approve(h.home, body)
    logged = approved(h)
    assert len(logged) == len(entries)
    return logged


def in_xero(h: Hub) -> tuple[list[str], list[str]]:
    """The Harvest entry keys of the time lines in Xero: on the firm's approved invoices
    (billed), and on its work-in-progress drafts (waiting)."""
    keys = {f"SF-{d}" for d in h.firm.deals}
    documents = [d for d in h.xero.listed("Invoices") if d["Status"] != "DELETED"]

    def lines(documents: list[dict[str, Any]]) -> list[str]:
        return [
            str(mark_of(line["Description"]))
            for d in documents
            for line in d["LineItems"]
            if line.get("ItemCode")
        ]

    billed = [
        d
        for d in documents
        if str(d.get("Reference") or "").split("/")[0] in keys
        and d["Status"] in ("AUTHORISED", "PAID")
    ]
    waiting = [d for d in documents if project_of_wip(d.get("Reference")) in keys]
    return lines(billed), lines(waiting)


def sorted_lines(h: Hub) -> tuple[list[str], list[str]]:
    billed, waiting = in_xero(h)
    return sorted(billed), sorted(waiting)


def harvest_billed(h: Hub) -> set[str]:
    return {f"harvest-{e['id']}" for e in h.harvest.list_all("time_entries")[0] if e["is_billed"]}


def idle(h: Hub) -> bool:
    """Nothing waits to be applied or sent to any system."""
    view = h.get("/api/v1/overview")
    busy = sum(s["pending"] + s["in_flight"] for s in view["systems"])
    return busy == 0 and view["inbox_pending"] == 0


def approved(h: Hub) -> set[str]:
    """Harvest's approved entries on the mobilized engagements."""
    codes = {f"SF-{d}" for d in h.mobilized()}
    return {
        f"harvest-{e['id']}"
        for e in h.harvest.list_all("time_entries")[0]
        if (e.get("project") or {}).get("code") in codes and e["is_closed"]
    }


def open_xero(h: Hub) -> list[dict[str, Any]]:
    """The open exceptions of writes to Xero (every page of the API's list)."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500, "system": "xero"}
    while True:
        page = h.get("/api/v1/exceptions", **params)
        found += page["items"]
        if page["next"] is None:
            return found
        params["before_id"] = page["next"]


def all_parked(h: Hub, count: int) -> list[dict[str, Any]] | None:
    """The open exceptions of writes to Xero once ``count`` are open and nothing else waits
    to be sent to Xero (else ``None``)."""
    row, parked = xero_row(h), open_xero(h)
    busy = row["pending"] or row["in_flight"] or row["parked"] != len(parked)
    return None if busy or len(parked) < count else parked


def test_time_parked_by_a_failing_xero_is_replayed_from_the_console(hub: Hub) -> None:
    assert in_xero(hub) == ([], [])  # no time yet
    sandboxctl.set_faults(hub.home, "xero", {"server_error": 1.0})
    try:
        expected = log_and_approve_time(hub)
        # every entry's command to Xero gave up and waits for a person, none is left to send
        parked = wait_for(lambda: all_parked(hub, len(expected)), 60)
        assert {e["entity"].rsplit(":", 1)[0] for e in parked} == {"harvest:time_entry"}
        assert len(parked) == len(expected)  # one per approved entry
        context, page = hub.signed_in()
        row = page.locator("#systems tr", has_text="xero")
        expect(row).to_contain_text("needs attention")
        expect(row.locator("td").last).to_have_text(str(len(parked)))
        shot(page, "xero-04-overview-xero-down")
        page.click("text=Exceptions")
        groups = page.locator("section.group", has_text="in xero")
        expect(groups).to_have_count(1)  # one cause: Xero answering 503
        group = groups.first
        expect(group.locator(".count")).to_have_text(str(len(parked)))
        expect(group).to_contain_text("retries exhausted in xero")
        expect(group).to_contain_text("add_timesheet_line")
        expect(group).to_contain_text("Xero HTTP 503")
        shot(page, "xero-05-exceptions")
    finally:
        sandboxctl.set_faults(hub.home, "xero", {})  # Xero is back
    assert in_xero(hub) == ([], [])  # nothing reached Xero while it failed
    group.locator("input[name=reason]").fill("Xero's outage is over")
    group.get_by_role("button", name=f"Replay all {len(parked)}").click()
    expect(page.get_by_role("status")).to_contain_text(f"replayed {len(parked)} of {len(parked)}")
    expect(page.locator("section.group", has_text="in xero")).to_have_count(0)
    # each approved entry recorded in Xero, then invoiced there (its month is over) exactly
    # once, and Harvest told it is billed
    wait_for(lambda: sorted_lines(hub) == (sorted(expected), []), 90)
    wait_for(lambda: harvest_billed(hub) >= expected and idle(hub), 60)
    billed, waiting = in_xero(hub)
    assert len(billed) == len(set(billed)) and set(billed) == expected and waiting == []
    assert open_xero(hub) == []
    page.reload()
    expect(page.locator("section.group", has_text="in xero")).to_have_count(0)
    shot(page, "xero-06-exceptions-after-replay")
    context.close()


def test_reconciliation_from_the_console_reads_xero_and_explains_a_renamed_contact(
    hub: Hub,
) -> None:
    deal_id = sorted(hub.mobilized())[-1]
    engagement = next(
        e for e in hub.get("/api/v1/engagements", limit=500)["items"] if e["deal_id"] == deal_id
    )
    contact = next(
        c
        for c in hub.xero.listed("Contacts")
        if c["Name"].strip().lower() == engagement["client"].strip().lower()
    )
    renamed = contact["Name"] + " (renamed in Xero)"
    answer = hub.xero.call(
        "POST", f"Contacts/{contact['ContactID']}", json={"Contacts": [{"Name": renamed}]}
    )
    assert answer.status_code == 200, answer.text
    context, page = hub.signed_in()
    page.click("text=Reconciliation")
    page.get_by_role("button", name="Run reconciliation now").click()
    expect(page.get_by_role("heading", name="Reconciliation run")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("finished: ok")
    expect(page.locator("#systems-read")).to_contain_text("xero (")
    run_id = int(page.url.rsplit("/", 1)[1].split("?")[0])
    run = hub.get(f"/api/v1/reconcile/runs/{run_id}")
    assert run["pages"].get("xero", 0) > 0 and run["records"]["time"] >= len(approved(hub))
    account = next(a["AccountId"] for a in hub.firm.salesforce["Opportunity"] if a["Id"] == deal_id)
    (drift,) = run["drifts"]  # the renamed contact, and nothing else
    assert (drift["domain"], drift["kind"], drift["key"], drift["field"]) == (
        "customers",
        "mismatch",
        account,
        "legal_name",
    )
    assert drift["values"] == {
        "salesforce": contact["Name"],
        "xero": renamed,
        "harvest": contact["Name"],
    }
    assert drift["owner"] == "xero" and drift["status"] == "drift"
    assert "xero (the owner) changed it" in drift["cause"], drift["cause"]
    row = page.locator("#drifts tr", has_text=renamed)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text("customers")
    expect(row.locator("td").nth(5)).to_have_text("xero")  # the owner
    expect(row.locator("td").nth(7)).to_contain_text("xero (the owner) changed it")
    shot(page, "xero-07-reconcile-drift")
    page.goto(f"{hub.base}/console/reconcile")
    expect(page.locator("#runs tr", has_text=f"run {run_id}")).to_contain_text(
        "console · key:alice"
    )
    expect(page.locator("#runs tr", has_text=f"run {run_id}")).to_contain_text("customers: ")
    shot(page, "xero-08-reconcile-runs")
    context.close()
