"""The SOQL subset of the Salesforce sandbox: parsing and evaluation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.sandboxes.salesforce.soql import MalformedQuery, parse, project, run

RECORDS: list[dict[str, Any]] = [
    {
        "Id": "001A",
        "Name": "Acme",
        "AnnualRevenue": 5000.0,
        "Industry": "Consulting",
        "SystemModstamp": "2026-11-01T10:00:00.000+0000",
        "Owner": {"Name": "Kim"},
    },
    {
        "Id": "001B",
        "Name": "beta",
        "AnnualRevenue": None,
        "Industry": "Retail",
        "SystemModstamp": "2026-11-02T10:00:00.000+0000",
        "Owner": {"Name": "Bo"},
    },
    {
        "Id": "001C",
        "Name": "Gamma",
        "AnnualRevenue": 100.5,
        "Industry": None,
        "SystemModstamp": "2026-11-02T10:00:00.000+0000",
        "Owner": None,
    },
]


def ids(query: str) -> list[str]:
    return [r["Id"] for r in run(parse(query), RECORDS)]


def test_where_order_limit_offset() -> None:
    assert ids(
        "SELECT Id FROM Account WHERE SystemModstamp >= 2026-11-02T00:00:00Z "
        "ORDER BY SystemModstamp, Id"
    ) == ["001B", "001C"]
    assert ids("select id from account where AnnualRevenue > 100 order by name desc") == [
        "001C",
        "001A",
    ]
    assert ids("SELECT Id FROM Account ORDER BY AnnualRevenue") == ["001B", "001C", "001A"]
    assert ids("SELECT Id FROM Account ORDER BY AnnualRevenue DESC NULLS FIRST") == [
        "001B",
        "001A",
        "001C",
    ]
    assert ids("SELECT Id FROM Account ORDER BY Name LIMIT 2 OFFSET 1") == ["001B", "001C"]


def test_logic_in_like_null_and_relationships() -> None:
    assert ids(
        "SELECT Id FROM Account WHERE Industry IN ('Retail', 'consulting') AND NOT (Name = 'ACME')"
    ) == ["001B"]
    assert ids("SELECT Id FROM Account WHERE Industry NOT IN ('Retail') OR Industry = null") == [
        "001A",
        "001C",
    ]
    assert ids("SELECT Id FROM Account WHERE Name LIKE '%a%' AND Owner.Name != 'Bo'") == [
        "001A",
        "001C",
    ]
    assert ids("SELECT Id FROM Account WHERE Name LIKE 'gam_a'") == ["001C"]
    assert ids("SELECT Id FROM Account WHERE Owner.Name = 'kim'") == ["001A"]
    query = parse("SELECT Id, Owner.Name FROM Account WHERE Id = '001A'")
    assert [project(query, r) for r in run(query, RECORDS)] == [
        {"Id": "001A", "Owner": {"Name": "Kim"}}
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT FROM Account", "expecting a field name"),
        ("SELECT Id Account", "expecting 'FROM'"),
        ("SELECT Id FROM Account WHERE", "unexpected end of query"),
        ("SELECT Id FROM Account WHERE Name ~ 'x'", "unexpected token: '~'"),
        ("SELECT Id FROM Account LIMIT -1", "non-negative whole number"),
        ("SELECT Id FROM Account WHERE Name = 'x' GROUP BY Name", "unexpected token: 'GROUP'"),
    ],
)
def test_malformed_queries_name_the_token(query: str, message: str) -> None:
    with pytest.raises(MalformedQuery, match=message) as info:
        parse(query)
    assert info.value.error_code == "MALFORMED_QUERY"


@given(
    threshold=st.integers(-1000, 1000),
    values=st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), max_size=30),
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
    limit=st.integers(0, 40),
)
def test_numeric_filters_agree_with_python(
    threshold: int, values: list[int | None], op: str, limit: int
) -> None:
    records = [{"Id": str(i), "Amount": v} for i, v in enumerate(values)]
    query = parse(
        f"SELECT Id FROM Opportunity WHERE Amount {op} {threshold} "
        f"ORDER BY Amount DESC, Id LIMIT {limit}"
    )
    python_ops = {
        "=": lambda a: a == threshold,
        "!=": lambda a: a != threshold,
        "<": lambda a: a < threshold,
        "<=": lambda a: a <= threshold,
        ">": lambda a: a > threshold,
        ">=": lambda a: a >= threshold,
    }
    expected = [r for r in records if r["Amount"] is not None and python_ops[op](r["Amount"])]
    if op == "!=":  # a null is "not equal" to a number in SOQL
        expected += [r for r in records if r["Amount"] is None]
    expected.sort(key=lambda r: (r["Amount"] is None, -(r["Amount"] or 0), r["Id"]))
    assert [r["Id"] for r in run(query, records)] == [r["Id"] for r in expected][:limit]


def test_literals() -> None:
    where = parse(
        "SELECT Id FROM X WHERE A = 'it\\'s' AND B = 1.50 AND C = true AND "
        "D = 2026-01-31 AND E > 2026-01-31T10:00:00+01:00"
    ).where
    values = [p.value for p in where.parts]
    assert values[:3] == ["it's", Decimal("1.50"), True]
    assert str(values[3]) == "2026-01-31"
    assert values[4] == datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
