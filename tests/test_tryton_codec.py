"""Tryton's typed JSON values round trip (no server needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closeloop.connectors.tryton.codec import decode, encode

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4)
    | st.dates()
    | st.datetimes(timezones=st.just(UTC))
    | st.times()
    | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=999))
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=5).filter(lambda k: k != "__class__"), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


def test_wire_shapes() -> None:
    assert encode(Decimal("1.50")) == {"__class__": "Decimal", "decimal": "1.50"}
    assert encode(date(2026, 11, 2)) == {"__class__": "date", "year": 2026, "month": 11, "day": 2}
    assert encode(timedelta(hours=7.5)) == {"__class__": "timedelta", "seconds": 27000.0}
    aware = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert encode(aware)["hour"] == 10 and decode(encode(aware)) == aware
    assert decode({"__class__": "time", "hour": 9}) == time(9)
    with pytest.raises(ValueError, match="unknown Tryton value class"):
        decode({"__class__": "Complex"})
