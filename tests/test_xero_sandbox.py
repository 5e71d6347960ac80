"""The Xero sandbox against Xero's contract, over real HTTP to its own process: custom
connection tokens and their expiry, the tenant header, batch writes with
``summarizeErrors=false``, invoice totals to the penny (Exclusive and Inclusive, tax rounded
per line), status transitions, payments, ``If-Modified-Since``, ``Idempotency-Key``, the
minute and concurrent rate limits, faults, and every kind of answer validating against
Xero's Accounting OpenAPI description in ../shared/realdata (skipped, with the reason, when
absent)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from closeloop.sandboxes.xero.server import XeroServer
from tests.xero_support import (
    ROOMY,
    Api,
    body,
    contact,
    invoice,
    line,
    load_openapi,
    running_xero,
    token,
    validate,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XeroServer]:
    with running_xero(tmp_path_factory.mktemp("xero"), **ROOMY) as started:
        yield started


@pytest.fixture
def api(server: XeroServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def openapi() -> Any:
    return load_openapi()


def test_tokens_expire_after_1800_seconds_and_connections_list_the_tenant(
    server: XeroServer, api: Api
) -> None:
    assert token(server)  # Bearer, expires_in 1800
    wrong = httpx.post(
        server.token_url, auth=(server.client_id, "nope"), data={"grant_type": "client_credentials"}
    )
    assert wrong.status_code == 400 and wrong.json() == {"error": "invalid_client"}
    grant = httpx.post(
        server.token_url,
        auth=(server.client_id, server.client_secret),
        data={"grant_type": "authorization_code"},
    )
    assert grant.json() == {"error": "unsupported_grant_type"}
    listed = api.http.get(f"{server.url}/connections")
    assert [(c["tenantId"], c["tenantType"]) for c in listed.json()] == [
        (server.tenant_id, "ORGANISATION")
    ]
    assert api.call("GET", "TaxRates").status_code == 200
    api.admin("POST", "clock", json={"advance_s": 1801})
    expired = api.call("GET", "TaxRates")
    assert expired.status_code == 401
    assert expired.json()["Detail"].startswith("TokenExpired")
    assert Api(server).call("GET", "TaxRates").status_code == 200  # a new token works


def test_every_accounting_call_needs_the_bearer_token_and_the_tenant(
    server: XeroServer, api: Api
) -> None:
    url = f"{server.base_url}/Contacts"
    bearer = api.http.headers["Authorization"]
    assert httpx.get(url, headers={"xero-tenant-id": server.tenant_id}).status_code == 401
    assert httpx.get(url, headers={"Authorization": bearer}).status_code == 403
    other = {"Authorization": bearer, "xero-tenant-id": "00000000-0000-0000-0000-000000000000"}
    assert httpx.get(url, headers=other).status_code == 403
    assert api.call("GET", "Contacts").status_code == 200


def test_a_bad_contact_fails_alone_with_summarize_errors_false(api: Api) -> None:
    contact(api, "Existing Ltd")
    batch = [
        {"Name": "Alpha Ltd", "TaxNumber": "GB123456789"},
        {"Name": "Existing Ltd"},
        {"Name": "Gamma Ltd", "EmailAddress": "not an address"},
        {"Name": "Delta Ltd"},
    ]
    answer = api.call(
        "POST", "Contacts", params={"summarizeErrors": "false"}, json={"Contacts": batch}
    )
    assert answer.status_code == 200
    rows = answer.json()["Contacts"]
    assert [r["StatusAttributeString"] for r in rows] == ["OK", "ERROR", "ERROR", "OK"]
    assert "already assigned to another contact" in rows[1]["ValidationErrors"][0]["Message"]
    assert rows[2]["HasValidationErrors"] is True and "ContactID" not in rows[2]
    found = api.call("GET", "Contacts", params={"where": 'Name=="Alpha Ltd"'}).json()["Contacts"]
    assert [(c["Name"], c["TaxNumber"]) for c in found] == [("Alpha Ltd", "GB123456789")]
    # By default one bad element refuses the batch, and nothing of it is written.
    whole = api.call("POST", "Contacts", json={"Contacts": [{"Name": "Epsilon Ltd"}, {"Name": ""}]})
    assert whole.status_code == 400 and whole.json()["Type"] == "ValidationException"
    assert whole.json()["Elements"][0]["ValidationErrors"]
    missing = api.call("GET", "Contacts", params={"where": 'Name=="Epsilon Ltd"'})
    assert missing.json()["Contacts"] == []


def test_a_bad_invoice_fails_alone_in_a_batch(api: Api) -> None:
    cid = contact(api, "Batch Buyer Ltd")
    good = {"Type": "ACCREC", "Contact": {"ContactID": cid}, "LineItems": [line("10.00")]}
    bad = good | {"LineItems": [line("10.00", tax_type="NOSUCHTAX")]}
    answer = api.call(
        "PUT", "Invoices", params={"summarizeErrors": "false"}, json={"Invoices": [good, bad, good]}
    )
    rows = answer.json()["Invoices"]
    assert answer.status_code == 200
    assert [r["HasErrors"] for r in rows] == [False, True, False]
    assert "NOSUCHTAX" in rows[1]["ValidationErrors"][0]["Message"]
    assert rows[0]["InvoiceID"] != rows[2]["InvoiceID"]


def test_exclusive_totals_round_tax_per_line_to_the_penny(api: Api) -> None:
    cid = contact(api, "Exclusive Buyer Ltd")
    lines = [line("0.03"), line("0.03"), line("0.03"), line("33.33", quantity="3")]
    lines.append(line("500.00", tax_type="ZERORATEDOUTPUT"))
    lines.append(line("250.00", tax_type="ECZROUTPUTSERVICES"))
    made = invoice(api, cid, lines, LineAmountTypes="Exclusive")
    # 0.03 * 20% = 0.006 -> 0.01 per line (0.02 if the invoice were rounded once);
    # 99.99 * 20% = 19.998 -> 20.00; the zero-rated and reverse-charged lines carry no tax.
    assert [li["TaxAmount"] for li in made["LineItems"]] == [
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("20.00"),
        0,
        0,
    ]
    assert made["LineItems"][3]["LineAmount"] == Decimal("99.99")
    assert (made["SubTotal"], made["TotalTax"], made["Total"]) == (
        Decimal("850.08"),
        Decimal("20.03"),
        Decimal("870.11"),
    )
    assert made["AmountDue"] == Decimal("870.11") and made["Status"] == "DRAFT"


def test_inclusive_totals_derive_the_untaxed_amount_as_xero_does(api: Api) -> None:
    cid = contact(api, "Inclusive Buyer Ltd")
    made = invoice(
        api,
        cid,
        [line("100.00"), line("10.00"), line("5.00", "ZERORATEDOUTPUT")],
        LineAmountTypes="Inclusive",
    )
    # 100 * 20/120 = 16.666... -> 16.67; 10 * 20/120 = 1.666... -> 1.67
    assert [li["TaxAmount"] for li in made["LineItems"]] == [Decimal("16.67"), Decimal("1.67"), 0]
    assert (made["SubTotal"], made["TotalTax"], made["Total"]) == (
        Decimal("96.66"),
        Decimal("18.34"),
        Decimal("115.00"),
    )
    notax = invoice(
        api, cid, [{"Description": "x", "UnitAmount": "80.00"}], LineAmountTypes="NoTax"
    )
    assert (notax["TotalTax"], notax["Total"]) == (0, Decimal("80.00"))
    raw = api.call("GET", f"Invoices/{made['InvoiceID']}").text
    assert '"Total":115.00' in raw and '"TotalTax":18.34' in raw  # numbers with their pennies


def test_status_transitions_follow_xero_and_refuse_illegal_ones(api: Api) -> None:
    cid = contact(api, "Status Buyer Ltd")
    made = invoice(api, cid, [line("100.00")], Reference="SF-1/2026-01")
    iid = made["InvoiceID"]
    for status in ("SUBMITTED", "AUTHORISED"):
        moved = api.call("POST", f"Invoices/{iid}", json={"Status": status})
        assert moved.status_code == 200 and moved.json()["Invoices"][0]["Status"] == status
    back = api.call("POST", f"Invoices/{iid}", json={"Invoices": [{"Status": "DRAFT"}]})
    assert back.status_code == 400
    error = back.json()
    assert (error["ErrorNumber"], error["Type"]) == (10, "ValidationException")
    assert "AUTHORISED to DRAFT" in error["Elements"][0]["ValidationErrors"][0]["Message"]
    assert api.call("GET", f"Invoices/{iid}").json()["Invoices"][0]["Status"] == "AUTHORISED"
    draft = invoice(api, cid, [line("1.00")])
    assert (
        api.call("POST", f"Invoices/{draft['InvoiceID']}", json={"Status": "VOIDED"}).status_code
        == 400
    )
    assert (
        api.call("POST", f"Invoices/{draft['InvoiceID']}", json={"Status": "DELETED"}).status_code
        == 200
    )
    voided = api.call("POST", f"Invoices/{iid}", json={"Status": "VOIDED"})
    assert voided.json()["Invoices"][0]["Status"] == "VOIDED"
    paid = {
        "Type": "ACCREC",
        "Contact": {"ContactID": cid},
        "LineItems": [line("1.00")],
        "Status": "PAID",
    }
    assert api.call("PUT", "Invoices", json=paid).status_code == 400
    by_number = api.call("GET", f"Invoices/{made['InvoiceNumber']}").json()["Invoices"][0]
    assert by_number["Reference"] == "SF-1/2026-01"
    listed = api.call(
        "GET", "Invoices", params={"ContactIDs": cid, "Statuses": "VOIDED,DELETED"}
    ).json()["Invoices"]
    assert sorted(i["InvoiceID"] for i in listed) == sorted([iid, draft["InvoiceID"]])
    numbered = api.call("GET", "Invoices", params={"InvoiceNumbers": made["InvoiceNumber"]})
    assert [i["InvoiceID"] for i in numbered.json()["Invoices"]] == [iid]


def test_payments_make_an_invoice_paid(api: Api) -> None:
    cid = contact(api, "Paying Buyer Ltd")
    made = invoice(api, cid, [line("100.00")], Status="AUTHORISED")
    iid = made["InvoiceID"]

    def pay(amount: str, target: str = iid) -> httpx.Response:
        element = {
            "Invoice": {"InvoiceID": target},
            "Account": {"Code": "090"},
            "Date": "2026-02-01",
            "Amount": amount,
        }
        return api.call("PUT", "Payments", json={"Payments": [element]})

    assert pay("20.00").status_code == 200
    after = body(api.call("GET", f"Invoices/{iid}"))["Invoices"][0]
    assert (after["Status"], after["AmountPaid"], after["AmountDue"]) == (
        "AUTHORISED",
        Decimal("20.00"),
        Decimal("100.00"),
    )
    too_much = pay("100.01")
    assert too_much.status_code == 400
    assert "exceeds" in too_much.json()["Elements"][0]["ValidationErrors"][0]["Message"]
    assert api.call("POST", f"Invoices/{iid}", json={"Status": "VOIDED"}).status_code == 400
    # Two payments that each fit but together overpay: the batch is refused whole.
    half = {"Invoice": {"InvoiceID": iid}, "Account": {"Code": "090"}, "Amount": "60.00"}
    both = api.call("PUT", "Payments", json={"Payments": [half, half]})
    assert both.status_code == 400 and len(both.json()["Elements"]) == 1
    assert body(api.call("GET", f"Invoices/{iid}"))["Invoices"][0]["AmountDue"] == Decimal("100.00")
    assert pay("100.00").status_code == 200
    done = body(api.call("GET", f"Invoices/{iid}"))["Invoices"][0]
    assert (done["Status"], done["AmountPaid"], done["AmountDue"]) == ("PAID", Decimal("120.00"), 0)
    assert done["FullyPaidOnDate"].startswith("/Date(") and len(done["Payments"]) == 2
    draft = invoice(api, cid, [line("5.00")])
    assert "Authorised" in pay("1.00", draft["InvoiceID"]).text


def test_if_modified_since_returns_only_later_changes(api: Api) -> None:
    cid = contact(api, "Modified Buyer Ltd")
    first = invoice(api, cid, [line("1.00")])
    stamp = first["UpdatedDateUTC"]
    assert stamp.startswith("/Date(") and stamp.endswith("+0000)/")
    moment = datetime.fromtimestamp(int(stamp[6:19]) / 1000, UTC) + timedelta(milliseconds=1)
    second = invoice(api, cid, [line("2.00")])
    updated = api.call("POST", f"Invoices/{first['InvoiceID']}", json={"Reference": "changed"})
    assert updated.status_code == 200
    since = {"If-Modified-Since": moment.isoformat(timespec="milliseconds")}
    later = api.call("GET", "Invoices", headers=since).json()["Invoices"]
    ids = [i["InvoiceID"] for i in later]
    assert ids == [second["InvoiceID"], first["InvoiceID"]]  # by UpdatedDateUTC
    after_all = datetime.fromtimestamp(int(later[-1]["UpdatedDateUTC"][6:19]) / 1000, UTC)
    none_since = {"If-Modified-Since": (after_all + timedelta(milliseconds=1)).isoformat()}
    assert api.call("GET", "Invoices", headers=none_since).json()["Invoices"] == []
    paged = api.call("GET", "Invoices", headers=since, params={"page": 2, "pageSize": 1}).json()
    assert [i["InvoiceID"] for i in paged["Invoices"]] == [first["InvoiceID"]]
    assert paged["pagination"] == {"page": 2, "pageSize": 1, "pageCount": 2, "itemCount": 2}


def test_an_idempotency_key_replays_the_first_answer_without_writing_again(api: Api) -> None:
    cid = contact(api, "Idempotent Buyer Ltd")
    element = {
        "Type": "ACCREC",
        "Contact": {"ContactID": cid},
        "LineItems": [line("7.00")],
        "Reference": "IDEM-1",
    }
    headers = {"Idempotency-Key": "closeloop:invoice:IDEM-1"}
    first = api.call("PUT", "Invoices", json={"Invoices": [element]}, headers=headers)
    again = api.call("PUT", "Invoices", json={"Invoices": [element]}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    found = api.call("GET", "Invoices", params={"where": 'Reference=="IDEM-1"'}).json()["Invoices"]
    assert len(found) == 1
    other = api.call(
        "PUT",
        "Invoices",
        json={"Invoices": [element]},
        headers={"Idempotency-Key": "closeloop:invoice:IDEM-2"},
    )
    assert other.json()["Invoices"][0]["InvoiceID"] != found[0]["InvoiceID"]


def test_the_minute_limit_answers_429_with_retry_after(api: Api) -> None:
    api.admin("POST", "clock", json={"advance_s": 61})  # an empty minute window
    before = api.admin("GET", "calls").json()
    api.admin("PUT", "limits", json={"minute": 3})
    try:
        remaining = [api.call("GET", "TaxRates").headers["X-MinLimit-Remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        over = api.call("GET", "TaxRates")
        assert over.status_code == 429
        assert over.headers["X-Rate-Limit-Problem"] == "minute"
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        api.admin("POST", "clock", json={"advance_s": 61})
        again = api.call("GET", "TaxRates")
        assert again.status_code == 200 and "X-DayLimit-Remaining" in again.headers
        stats = api.admin("GET", "calls").json()
        assert stats["throttled"].get("minute", 0) == before["throttled"].get("minute", 0) + 1
        assert stats["limits"]["minute"] == 3
    finally:
        api.admin("PUT", "limits", json=ROOMY)


def test_the_day_limit_answers_429_until_the_day_has_passed(api: Api) -> None:
    used = api.admin("GET", "calls").json()["total"]  # every admitted call is in this day
    api.admin("PUT", "limits", json={"day": used + 1})
    try:
        last = api.call("GET", "TaxRates")
        assert last.status_code == 200 and last.headers["X-DayLimit-Remaining"] == "0"
        over = api.call("GET", "TaxRates")
        assert over.status_code == 429 and over.headers["X-Rate-Limit-Problem"] == "day"
        assert 60 < int(over.headers["Retry-After"]) <= 86_400
    finally:
        api.admin("PUT", "limits", json=ROOMY)
    assert api.call("GET", "TaxRates").status_code == 200


def test_the_concurrent_limit_refuses_a_sixth_call_in_flight(api: Api) -> None:
    api.admin("PUT", "limits", json={"concurrent": 2})
    api.admin("PUT", "faults", json={"latency_s": 1.0})
    try:
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: api.call("GET", "TaxRates"), range(5)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 1 and statuses.count(429) >= 1
        refused = [a for a in answers if a.status_code == 429]
        assert all(a.headers["X-Rate-Limit-Problem"] == "concurrent" for a in refused)
        throttled = api.admin("GET", "calls").json()["throttled"]
        assert throttled["concurrent"] >= len(refused)
    finally:
        api.admin("PUT", "faults", json={})
        api.admin("PUT", "limits", json=ROOMY)


def test_faults_fail_like_xero_and_a_lost_answer_still_wrote(api: Api) -> None:
    cid = contact(api, "Faulty Buyer Ltd")
    element = {"Type": "ACCREC", "Contact": {"ContactID": cid}, "LineItems": [line("3.00")]}
    try:
        api.admin("PUT", "faults", json={"server_error": 1.0})
        failed = api.call("PUT", "Invoices", json=element | {"Reference": "FAULT-503"})
        assert failed.status_code == 503
        api.admin("PUT", "faults", json={"lost_response": 1.0})
        with pytest.raises(httpx.HTTPError):
            api.call("PUT", "Invoices", json=element | {"Reference": "FAULT-LOST"})
    finally:
        api.admin("PUT", "faults", json={})
    for reference, count in (("FAULT-503", 0), ("FAULT-LOST", 1)):
        found = api.call("GET", "Invoices", params={"where": f'Reference=="{reference}"'})
        assert len(found.json()["Invoices"]) == count


def test_answers_validate_against_the_openapi_description(api: Api, openapi: Any) -> None:
    cid = contact(api, "Conformance Ltd", TaxNumber="GB999999973", EmailAddress="ap@conf.example")
    validate(openapi, "GET", "Contacts", api.call("GET", "Contacts"))
    validate(openapi, "GET", f"Contacts/{cid}", api.call("GET", f"Contacts/{cid}"))
    created = api.call("PUT", "Contacts", json={"Contacts": [{"Name": "Conformance Two Ltd"}]})
    validate(openapi, "PUT", "Contacts", created)
    refused = api.call("PUT", "Contacts", json={"Contacts": [{"Name": "Conformance Ltd"}]})
    assert refused.status_code == 400
    validate(openapi, "PUT", "Contacts", refused)
    element = {
        "Type": "ACCREC",
        "Contact": {"ContactID": cid},
        "Status": "AUTHORISED",
        "LineItems": [line("120.00")],
        "LineAmountTypes": "Inclusive",
        "Date": "2026-01-31",
        "DueDate": "2026-02-28",
        "Reference": "CONF-1",
    }
    made = api.call(
        "PUT",
        "Invoices",
        params={"summarizeErrors": "false"},
        json={"Invoices": [element, element | {"LineItems": []}]},
    )
    validate(openapi, "PUT", "Invoices", made)
    iid = made.json()["Invoices"][0]["InvoiceID"]
    payment = {"Invoice": {"InvoiceID": iid}, "Account": {"Code": "090"}, "Amount": "120.00"}
    paid = api.call("PUT", "Payments", json={"Payments": [payment]})
    validate(openapi, "PUT", "Payments", paid)
    pid = paid.json()["Payments"][0]["PaymentID"]
    validate(openapi, "GET", f"Payments/{pid}", api.call("GET", f"Payments/{pid}"))
    validate(openapi, "GET", "Payments", api.call("GET", "Payments"))
    validate(openapi, "GET", f"Invoices/{iid}", api.call("GET", f"Invoices/{iid}"))
    listed = api.call("GET", "Invoices", params={"page": 1})
    validate(openapi, "GET", "Invoices", listed)
    updated = api.call("POST", f"Invoices/{iid}", json={"Status": "VOIDED"})
    assert updated.status_code == 400
    validate(openapi, "POST", f"Invoices/{iid}", updated)
    accounts = api.call("GET", "Accounts")
    validate(openapi, "GET", "Accounts", accounts)
    bank = [a for a in accounts.json()["Accounts"] if a["Type"] == "BANK"]
    assert [a["Code"] for a in bank] == ["090"]
    assert bank[0]["AccountID"] == paid.json()["Payments"][0]["Account"]["AccountID"]
    organisation = api.call("GET", "Organisation")
    validate(openapi, "GET", "Organisation", organisation)
    assert organisation.json()["Organisations"][0]["BaseCurrency"] == "GBP"
    rates = api.call("GET", "TaxRates")
    validate(openapi, "GET", "TaxRates", rates)
    assert {"OUTPUT2", "ZERORATEDOUTPUT", "ECZROUTPUTSERVICES"} <= {
        r["TaxType"] for r in rates.json()["TaxRates"]
    }


def test_a_credit_note_allocated_to_an_invoice_lowers_what_is_due(api: Api, openapi: Any) -> None:
    cid = contact(api, "Credited Buyer Ltd")
    made = invoice(api, cid, [line("100.00")], Status="AUTHORISED")
    iid = made["InvoiceID"]
    note = {
        "Type": "ACCRECCREDIT",
        "Contact": {"ContactID": cid},
        "Status": "AUTHORISED",
        "LineItems": [line("25.00")],
        "Reference": "SF-1/2026-01 credit",
    }
    created = api.call("PUT", "CreditNotes", json={"CreditNotes": [note]})
    assert created.status_code == 200, created.text
    validate(openapi, "PUT", "CreditNotes", created)
    credit = body(created)["CreditNotes"][0]
    nid = credit["CreditNoteID"]
    assert (credit["Total"], credit["RemainingCredit"]) == (Decimal("30.00"), Decimal("30.00"))

    def allocate(amount: str, target: str = iid) -> httpx.Response:
        element = {"Invoice": {"InvoiceID": target}, "Amount": amount, "Date": "2026-02-02"}
        return api.call("PUT", f"CreditNotes/{nid}/Allocations", json={"Allocations": [element]})

    assert allocate("30.01").status_code == 400  # more than the credit
    other = invoice(api, contact(api, "Other Buyer Ltd"), [line("50.00")], Status="AUTHORISED")
    assert "same contact" in allocate("1.00", other["InvoiceID"]).text
    done = allocate("30.00")
    assert done.status_code == 200
    validate(openapi, "PUT", f"CreditNotes/{nid}/Allocations", done)
    after = body(api.call("GET", f"Invoices/{iid}"))["Invoices"][0]
    assert (after["AmountCredited"], after["AmountDue"], after["Status"]) == (
        Decimal("30.00"),
        Decimal("90.00"),
        "AUTHORISED",
    )
    assert after["CreditNotes"][0]["CreditNoteID"] == nid
    read = api.call("GET", f"CreditNotes/{nid}")
    validate(openapi, "GET", f"CreditNotes/{nid}", read)
    spent = body(read)["CreditNotes"][0]
    assert (spent["RemainingCredit"], spent["Status"]) == (0, "PAID")
    assert api.call("POST", f"Invoices/{iid}", json={"Status": "VOIDED"}).status_code == 400
    validate(openapi, "GET", "CreditNotes", api.call("GET", "CreditNotes"))


def test_where_combines_clauses_with_and_or_on_invoices_and_contacts(api: Api) -> None:
    first = contact(api, "Where Alpha Ltd", ContactNumber="WA-1")
    second = contact(api, "Where Beta Ltd", ContactNumber="WB-2")
    draft = invoice(api, first, [line("1.00")], Reference="WHERE/2026-01")
    authorised = invoice(api, first, [line("2.00")], Reference="WHERE/2026-02", Status="AUTHORISED")
    other = invoice(api, second, [line("3.00")], Reference="ELSE/where-2026")

    def found(resource: str, expression: str, **params: Any) -> list[str]:
        given = {"where": expression} if expression else {}
        answer = api.call("GET", resource, params={**given, **params})
        assert answer.status_code == 200, answer.text
        key = "InvoiceID" if resource == "Invoices" else "ContactID"
        return sorted(r[key] for r in answer.json()[resource])

    ids = sorted
    assert found("Invoices", 'Reference.StartsWith("WHERE/")') == ids(
        [draft["InvoiceID"], authorised["InvoiceID"]]
    )
    assert found("Invoices", 'Reference.Contains("where")') == ids(
        [draft["InvoiceID"], authorised["InvoiceID"], other["InvoiceID"]]
    )
    assert found("Invoices", 'Reference=="WHERE/2026-02"') == [authorised["InvoiceID"]]
    assert found("Invoices", f'Status=="DRAFT" AND Contact.ContactID==guid("{first}")') == [
        draft["InvoiceID"]
    ]
    assert found(
        "Invoices",
        f'Contact.ContactID==guid("{second}") || (Status=="AUTHORISED" && '
        'Reference.EndsWith("-02"))',
    ) == ids([authorised["InvoiceID"], other["InvoiceID"]])
    assert found("Invoices", 'Reference.StartsWith("WHERE/") AND Total > 2.00') == [
        authorised["InvoiceID"]
    ]
    assert found("Invoices", 'Reference.StartsWith("WHERE/") AND Date >= DateTime(2000, 1, 1)')
    assert found("Contacts", 'ContactNumber=="WB-2" OR Name=="Where Alpha Ltd"') == ids(
        [first, second]
    )
    assert found("Contacts", 'Name.StartsWith("Where ") AND ContactNumber!="WA-1"') == [second]
    assert found("Contacts", "", searchTerm="wa-1") == [first]
    assert found("Invoices", "", searchTerm="else/WHERE") == [other["InvoiceID"]]
    archived = api.call("POST", f"Contacts/{second}", json={"ContactStatus": "ARCHIVED"})
    assert archived.status_code == 200
    assert found("Contacts", 'Name.StartsWith("Where ")') == [first]
    assert found("Contacts", 'Name.StartsWith("Where ")', includeArchived="true") == ids(
        [first, second]
    )
    api.call("POST", f"Contacts/{second}", json={"ContactStatus": "ACTIVE"})
    ordered = api.call(
        "GET", "Contacts", params={"where": 'Name.StartsWith("Where ")', "order": "Name DESC"}
    )
    assert [c["Name"] for c in ordered.json()["Contacts"]] == ["Where Beta Ltd", "Where Alpha Ltd"]
    for broken in ('Reference.Matches("x")', 'Reference=="open', "Total >", "Name ASC"):
        refused = api.call("GET", "Invoices", params={"where": broken})
        assert refused.status_code == 400, broken
        assert refused.json()["Type"] == "QueryParseException"
    assert api.call("GET", "Invoices", params={"order": "Total; DROP"}).status_code == 400


def test_page_size_cuts_invoices_and_contacts_up_to_1000(api: Api) -> None:
    cid = contact(api, "Paged Buyer Ltd")
    for amount in ("1.00", "2.00", "3.00"):
        invoice(api, cid, [line(amount)], Reference="PAGED")
    where = {"where": 'Reference=="PAGED"', "order": "Total DESC"}
    page = body(api.call("GET", "Invoices", params={**where, "page": 1, "pageSize": 2}))
    assert [i["Total"] for i in page["Invoices"]] == [Decimal("3.60"), Decimal("2.40")]
    assert page["pagination"] == {"page": 1, "pageSize": 2, "pageCount": 2, "itemCount": 3}
    contacts = api.call("GET", "Contacts", params={"page": 1, "pageSize": 1000}).json()
    assert contacts["pagination"]["pageSize"] == 1000
    assert 1 <= len(contacts["Contacts"]) == contacts["pagination"]["itemCount"]
    too_big = api.call("GET", "Contacts", params={"page": 1, "pageSize": 1001})
    assert too_big.status_code == 400 and too_big.json()["Type"] == "QueryParseException"


def test_a_draft_invoice_is_updated_whole_and_deleted_but_an_authorised_one_is_not(
    api: Api, openapi: Any
) -> None:
    cid = contact(api, "Updated Buyer Ltd")
    draft = invoice(api, cid, [line("10.00"), line("20.00")], Reference="UPD-1", Date="2026-03-01")
    kept = draft["LineItems"][0]["LineItemID"]
    change = {
        "InvoiceID": draft["InvoiceID"],
        "Reference": "UPD-1b",
        "Date": "2026-03-05",
        "DueDate": "2026-04-04",
        "LineItems": [
            {**line("15.00"), "LineItemID": kept, "Description": "Consulting, revised"},
            line("5.00", quantity="2"),
        ],
    }
    updated = api.call("POST", "Invoices", json={"Invoices": [change]})
    assert updated.status_code == 200, updated.text
    validate(openapi, "POST", "Invoices", updated)
    read = body(api.call("GET", f"Invoices/{draft['InvoiceID']}"))["Invoices"][0]
    assert [(li["Description"], li["LineAmount"]) for li in read["LineItems"]] == [
        ("Consulting, revised", Decimal("15.00")),
        ("Consulting", Decimal("10.00")),
    ]
    assert read["LineItems"][0]["LineItemID"] == kept
    assert read["LineItems"][1]["LineItemID"] not in {li["LineItemID"] for li in draft["LineItems"]}
    assert (read["Reference"], read["Total"], read["Status"]) == (
        "UPD-1b",
        Decimal("30.00"),
        "DRAFT",
    )
    assert read["Date"] == "/Date(1772668800000+0000)/"  # 2026-03-05
    assert read["DueDate"] == "/Date(1775260800000+0000)/"  # 2026-04-04
    deleted = api.call("POST", f"Invoices/{draft['InvoiceID']}", json={"Status": "DELETED"})
    assert deleted.status_code == 200 and deleted.json()["Invoices"][0]["Status"] == "DELETED"
    authorised = invoice(api, cid, [line("10.00")], Status="AUTHORISED")
    refused = api.call("POST", f"Invoices/{authorised['InvoiceID']}", json={"Status": "DELETED"})
    assert refused.status_code == 400
    message = refused.json()["Elements"][0]["ValidationErrors"][0]["Message"]
    assert "AUTHORISED to DELETED" in message
    validate(openapi, "POST", f"Invoices/{authorised['InvoiceID']}", refused)


def test_documents_in_the_currencies_set_up_are_taken_and_others_refused(
    api: Api, openapi: Any
) -> None:
    listed = api.call("GET", "Currencies")
    validate(openapi, "GET", "Currencies", listed)
    assert [c["Code"] for c in listed.json()["Currencies"]] == ["GBP", "EUR", "USD"]
    cid = contact(api, "Währung GmbH")
    euro = invoice(api, cid, [line("100.00")], CurrencyCode="EUR")
    assert euro["CurrencyCode"] == "EUR" and Decimal(str(euro["Total"])) == Decimal("120.00")
    refused = api.call(
        "PUT",
        "Invoices",
        json={
            "Type": "ACCREC",
            "Contact": {"ContactID": cid},
            "CurrencyCode": "CHF",
            "LineItems": [line("100.00")],
        },
    )
    assert refused.status_code == 400
    assert "The currency CHF is not set up" in refused.text
    assert not [i for i in api.listed("Invoices") if i.get("CurrencyCode") == "CHF"]
