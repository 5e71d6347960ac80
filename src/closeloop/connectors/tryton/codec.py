"""Tryton's typed JSON values (trytond ``protocols/jsonrpc.py``: ``JSONEncoder``/``JSONDecoder``).

``Decimal`` -> ``{"__class__": "Decimal", "decimal": "1.50"}``; ``date`` ->
``{"__class__": "date", "year", "month", "day"}``; ``datetime`` adds hour, minute, second,
microsecond; ``time`` likewise; ``timedelta`` -> ``{"__class__": "timedelta", "seconds"}``;
``bytes`` -> ``{"__class__": "bytes", "base64"}``. Tryton's datetimes are naive UTC: aware
datetimes are sent in UTC and read back as aware UTC.
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any


def encode(value: Any) -> Any:
    """``value`` with Decimal, dates, times, durations and bytes as Tryton's typed objects."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # Tryton keeps naive UTC timestamps
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`, recursively. Raises ``ValueError`` on an unknown class."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__class__")
    if kind is None:
        return {k: decode(v) for k, v in value.items()}
    if kind == "Decimal":
        return Decimal(value["decimal"])
    if kind == "date":
        return date(value["year"], value["month"], value["day"])
    if kind == "datetime":
        return datetime(
            value["year"],
            value["month"],
            value["day"],
            value.get("hour", 0),
            value.get("minute", 0),
            value.get("second", 0),
            value.get("microsecond", 0),
            tzinfo=UTC,
        )
    if kind == "time":
        return time(
            value.get("hour", 0),
            value.get("minute", 0),
            value.get("second", 0),
            value.get("microsecond", 0),
        )
    if kind == "timedelta":
        return timedelta(seconds=value["seconds"])
    if kind == "bytes":
        return base64.b64decode(value["base64"])
    raise ValueError(f"unknown Tryton value class {kind!r}")
