"""Xero's wire format: .NET JSON dates, money as JSON numbers parsed to ``Decimal``, the
response envelope and the error bodies of the Accounting API.

Follows the Accounting API's OpenAPI description (``x-is-msdate`` fields such as
``UpdatedDateUTC`` are ``/Date(<ms since epoch>+0000)/``; ``x-is-money`` fields are numbers)
and Xero's "HTTP response codes" page (a 400 ``ValidationException`` lists ``Elements``, each
with its ``ValidationErrors``). Money is ``Decimal`` from the request's text to the answer's
text: it is never a float.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

_MSDATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
CENT = Decimal("0.01")


class XeroError(Exception):
    """An answer other than 200: ``status`` and Xero's JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {body}")
        self.status, self.body, self.headers = status, body, headers or {}


def validation_error(elements: list[dict[str, Any]]) -> XeroError:
    """The 400 of a write refused for validation (``summarizeErrors`` true, the default):
    ``{"ErrorNumber": 10, "Type": "ValidationException", "Message": ..., "Elements": [...]}``
    where each element is the record sent, with its ``ValidationErrors``."""
    return XeroError(
        400,
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "A validation exception occurred",
            "Elements": elements,
        },
    )


def bad_request(kind: str, message: str, number: int = 14) -> XeroError:
    """A 400 other than validation (``PostDataInvalidException`` 14, ``QueryParseException``
    16), with Xero's body ``{"ErrorNumber", "Type", "Message"}``."""
    return XeroError(400, {"ErrorNumber": number, "Type": kind, "Message": message})


def not_found(message: str = "The resource you're looking for cannot be found") -> XeroError:
    """Xero's 404: ``{"Title": "Not Found", "Status": 404, "Detail": ...}``."""
    return XeroError(404, {"Title": "Not Found", "Status": 404, "Detail": message})


def msdate(moment: datetime) -> str:
    """``/Date(1700000000000+0000)/``: milliseconds since the epoch, UTC."""
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def day_msdate(day: date) -> str:
    """A calendar date as Xero sends ``Date``/``DueDate``: midnight UTC as a .NET date."""
    return msdate(datetime(day.year, day.month, day.day, tzinfo=UTC))


def parse_day(text: Any) -> date:
    """A request's date: ``YYYY-MM-DD``, ``YYYY-MM-DDThh:mm:ss`` or ``/Date(ms+0000)/``.
    Raises ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError("a date must be a string")
    found = _MSDATE.match(text)
    if found:
        return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC).date()
    return date.fromisoformat(text[:10])


def parse_since(text: str) -> datetime:
    """The ``If-Modified-Since`` header: ISO 8601 (as the OpenAPI example,
    ``2020-02-06T12:17:43.202-08:00``; UTC when no offset) or RFC 1123 (HTTP's format).
    Raises :class:`XeroError` 400 when neither."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise bad_request("PostDataInvalidException", "Invalid If-Modified-Since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def money(value: Any, name: str) -> Decimal:
    """A money or quantity field of a request (already ``Decimal`` or ``int`` when parsed by
    :func:`loads`, or a numeric string). Raises ``ValueError`` naming the field."""
    if isinstance(value, bool | float):
        raise ValueError(f"{name} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be a number") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a number")
    return number


MONEY_FIELDS = frozenset(
    {
        "Quantity",
        "UnitAmount",
        "LineAmount",
        "TaxAmount",
        "DiscountRate",
        "DiscountAmount",
        "UnitPrice",
        "Amount",
        "SubTotal",
        "TotalTax",
        "Total",
    }
)


def echo(value: Any) -> Any:
    """An element as a refusal repeats it: money fields sent as numeric text are numbers
    (Xero echoes what it parsed, so a refused element still fits its schema)."""
    if isinstance(value, list):
        return [echo(v) for v in value]
    if not isinstance(value, dict):
        return value
    made = {}
    for key, item in value.items():
        if key in MONEY_FIELDS and isinstance(item, str):
            with contextlib.suppress(ValueError):
                item = money(item, key)
        made[key] = echo(item)
    return made


def loads(body: bytes) -> Any:
    """A request body, numbers with a fraction as ``Decimal`` (never float). Raises
    :class:`XeroError` 400 when it is not JSON."""
    try:
        return json.loads(body or b"{}", parse_float=Decimal)
    except ValueError:
        raise bad_request("PostDataInvalidException", "Invalid JSON in the request") from None


def dumps(value: Any) -> str:
    """JSON text where a ``Decimal`` is written as a number with its own digits."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def envelope(key: str, rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The Accounting API's answer: ``{"Id", "Status": "OK", "ProviderName",
    "DateTimeUTC", key: rows}``."""
    return {
        "Id": str(uuid.uuid4()),
        "Status": "OK",
        "ProviderName": "closeloop sandbox",
        "DateTimeUTC": msdate(now).replace("+0000", ""),
        key: rows,
    }
