"""The console's forms in the hub's own app (in process, a real SQLite store): sign in and
out, login CSRF, notices that only the hub can write, and a group's bulk action that acts on
exactly the exceptions the page showed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from closeloop.api.auth import SESSION_COOKIE
from closeloop.bootstrap import Hub, build_http_app
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.domain.errors import ConflictError
from closeloop.ports.store import ExceptionQuery, NewException
from tests.conftest import make_hub
from tests.memory_system import MemorySystem

MESSAGE = "project {n} is closed: time entry refused"


@pytest.fixture
def hub(sqlite_url: str) -> Iterator[Hub]:
    made = make_hub(sqlite_url, MemorySystem("crm"), MemorySystem("erp"))
    yield made
    made.close()


def open_exceptions(hub: Hub, *rows: tuple[Impact, str]) -> list[int]:
    """Open validation exceptions on the erp, of ``(impact, message)``."""
    with hub.store.transaction() as tx:
        return tx.open_exceptions(
            [
                NewException(ExceptionClass.VALIDATION, impact, f"erp:time_entry:{n}", message)
                for n, (impact, message) in enumerate(rows)
            ],
            datetime.now(UTC),
        )


def signed_in(hub: Hub, role: str = "operator") -> tuple[TestClient, str]:
    """A browser-like client signed in with a new key of ``role``; and the key."""
    client = TestClient(build_http_app(hub), base_url="http://hub")
    token = hub.access.create(f"{role}-{len(hub.access.keys())}", role, "test", None).token
    answer = client.post(
        "/console/sign-in",
        data={"key": token},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and SESSION_COOKIE in client.cookies
    return client, token


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def test_a_group_bulk_action_takes_only_what_the_filtered_page_showed(hub: Hub) -> None:
    revenue, client_a, client_b = open_exceptions(
        hub,
        (Impact.REVENUE, MESSAGE.format(n=1)),
        (Impact.CLIENT, MESSAGE.format(n=2)),
        (Impact.CLIENT, MESSAGE.format(n=3)),
    )
    browser, _ = signed_in(hub)
    page = browser.get("/console/exceptions", params={"impact": "revenue"}).text
    (form,) = re.findall(
        r'<form method="post" action="/console/exceptions/bulk">.*?</form>', page, re.S
    )
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    assert fields["impact"] == "revenue" and fields["upto"] == str(revenue)
    late = open_exceptions(hub, (Impact.REVENUE, MESSAGE.format(n=4)))  # after the page
    done = browser.post(
        "/console/exceptions/bulk",
        data={**fields, "do": "resolve:group", "reason": "project reopened"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert "resolved 1 of 1" in browser.get(done.headers["location"]).text
    status = {e.id: e.status for e in hub.operations.list_exceptions(None, 10)}
    assert status == {revenue: "resolved", client_a: "open", client_b: "open", late[0]: "open"}


def test_signing_out_ends_the_session_everywhere(hub: Hub) -> None:
    browser, _ = signed_in(hub, "viewer")
    stolen = browser.cookies[SESSION_COOKIE]
    token = csrf(browser.get("/console").text)
    out = browser.post("/console/sign-out", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    copy = TestClient(build_http_app(hub), base_url="http://hub")
    copy.cookies.set(SESSION_COOKIE, stolen)
    assert copy.get("/api/v1/status").status_code == 401  # the captured cookie is over
    again, _ = signed_in(hub, "viewer")  # the key itself still works
    assert again.get("/api/v1/status").status_code == 200


def test_another_site_cannot_sign_you_in(hub: Hub) -> None:
    token = hub.access.create("mallory", "viewer", "test", None).token
    browser = TestClient(build_http_app(hub), base_url="http://hub")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        answer = browser.post("/console/sign-in", data={"key": token}, headers=headers)
        assert answer.status_code == 403 and SESSION_COOKIE not in browser.cookies
    same = browser.post("/console/sign-in", data={"key": token}, headers={"Origin": "http://hub"})
    assert same.status_code == 200 and SESSION_COOKIE in browser.cookies  # followed to /console


def test_only_the_hub_writes_notices_on_its_pages(hub: Hub) -> None:
    browser, _ = signed_in(hub, "viewer")
    lure = "Your key expired: mail it to helpdesk@evil.example"
    for query in ({"notice": lure}, {"problem": lure}, {"flash": lure}):
        assert lure not in browser.get("/console", params=query).text
    token = csrf(browser.get("/console").text)
    out = browser.post("/console/sign-out", data={"csrf_token": token})
    assert "signed out" in out.text  # the hub's own notice, signed, is shown


def test_search_folds_every_script_and_key_names_stay_unique(hub: Hub) -> None:
    (found,) = open_exceptions(hub, (Impact.CLIENT, "Ünïcode MÜLLER GmbH refused"))
    for needle in ("müller", "MÜLLER", "ünïcode"):
        hits = hub.operations.find_exceptions(ExceptionQuery(search=needle))
        assert [e.id for e in hits] == [found], needle
    key = hub.access.create("olga", "operator", "test", None)
    hub.access.revoke(key.row.id, "test")
    with pytest.raises(ConflictError):  # key:olga names one key in the audit, for ever
        hub.access.create("olga", "admin", "test", None)
