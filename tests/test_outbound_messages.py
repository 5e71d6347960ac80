"""Salesforce Outbound Messages: the sandbox's envelope, the connector's parser and Ack."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.connectors.salesforce.outbound import MalformedEnvelope, ack, fault, parse
from closeloop.sandboxes.salesforce.outbound import envelope, is_ack

ORG = "00D5g000004CzaBEAS"


def test_round_trip_of_a_delivery() -> None:
    body = envelope(
        ORG,
        "04k5g000000Abc",
        "https://127.0.0.1:8443",
        [
            (
                "04l000000000001",
                "Opportunity",
                {
                    "Id": "0065g00000A1",
                    "StageName": "Closed Won",
                    "Amount": 120000,
                    "IsWon": True,
                    "Tax_Id__c": None,
                    "Account": {"Name": "Acme & Co <GmbH>"},
                },
            ),
            ("04l000000000002", "Account", {"Id": "0015g00000B2", "Name": "Beta"}),
        ],
    )
    message = parse(body)
    assert (message.organization_id, message.action_id) == (ORG, "04k5g000000Abc")
    first, second = message.notifications
    assert (first.sobject, first.record_id, first.notification_id) == (
        "Opportunity",
        "0065g00000A1",
        "04l000000000001",
    )
    assert first.fields == {
        "Id": "0065g00000A1",
        "StageName": "Closed Won",
        "Amount": "120000",
        "IsWon": "true",
        "Tax_Id__c": None,
        "Account": {"Name": "Acme & Co <GmbH>"},
    }
    assert second.sobject == "Account" and second.fields["Name"] == "Beta"


@given(
    st.dictionaries(
        st.from_regex(r"[A-Z][A-Za-z0-9_]{0,20}", fullmatch=True),
        st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cn"]),
            min_size=1,
            max_size=30,
        )
        .map(str.strip)
        .filter(bool),
        max_size=6,
    )
)
def test_any_text_survives_the_envelope(fields: dict[str, str]) -> None:
    message = parse(envelope(ORG, "a", "https://x", [("n1", "Account", {"Id": "001", **fields})]))
    assert message.notifications[0].fields == {"Id": "001", **fields}


def test_ack_and_fault() -> None:
    assert is_ack(ack())
    assert not is_ack(fault("bad envelope"))
    assert b"<faultcode>soapenv:Client</faultcode>" in fault("a < b")
    assert b"a &lt; b" in fault("a < b")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not xml", "not well-formed or unsafe XML"),
        (b"<a/>", "not a SOAP envelope"),
        (
            b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body/></e:Envelope>',
            "no outbound notifications",
        ),
        (envelope(ORG, "a", "https://x", []), "no Notification"),
        (
            envelope(ORG, "a", "https://x", [("n1", "Account", {"Name": "no id"})]),
            "names no object type or record Id",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
            "not well-formed or unsafe XML",
        ),  # entities are refused (defusedxml)
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedEnvelope, match=problem):
        parse(body)
