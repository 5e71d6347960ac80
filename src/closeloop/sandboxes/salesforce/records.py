"""Field values as Salesforce takes and gives them: validation of a record body against the
org's schema, 18-character record ids, timestamps.

Errors are :class:`SalesforceError` with Salesforce's error codes and messages (*REST API
Developer Guide*, "Status Codes and Error Responses"; *SOAP API Developer Guide*,
"StatusCode").
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from closeloop.sandboxes.salesforce.schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, SObjectDef


def parse_instant(text: str) -> datetime:
    """A dateTime as Salesforce's REST API takes it (ISO 8601 with ``Z``, ``+00:00`` or
    ``+0000``) as an aware datetime. Raises ``ValueError`` for anything else, including a
    time without an offset."""
    text = text.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


class SalesforceError(Exception):
    """An error answer: HTTP ``status``, Salesforce ``code``, ``message``, affected ``fields``."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []

    def body(self) -> list[dict[str, Any]]:
        """The REST error body ``[{"message", "errorCode", "fields"}]``."""
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            entry["fields"] = self.fields
        return [entry]

    def collection_error(self) -> dict[str, Any]:
        """The error as sObject Collections report it per record (``statusCode``)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found() -> SalesforceError:
    """``NOT_FOUND``: the record or resource does not exist."""
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


def case_safe_id(id15: str) -> str:
    """The 18-character case-insensitive form of a 15-character record id: three suffix
    characters encode which characters of each five-character chunk are upper case."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[chunk * 5 : chunk * 5 + 5]) if c.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


def make_id(prefix: str, sequence: int) -> str:
    """A new 18-character id: key prefix, pod marker ``5g``, base-62 sequence, checksum."""
    digits = ""
    while sequence:
        sequence, rest = divmod(sequence, 62)
        digits = _BASE62[rest] + digits
    return case_safe_id(prefix + "5g" + digits.rjust(10, "0"))


def is_id(value: str) -> bool:
    """Whether ``value`` has the form of a record id (15 or 18 letters and digits)."""
    return bool(_ID.match(value))


def id18(value: str) -> str:
    """``value`` in its 18-character form (15-character ids are case sensitive)."""
    return case_safe_id(value) if len(value) == 15 else value


def timestamp(moment: datetime) -> str:
    """Salesforce's datetime text: ``2024-05-01T09:30:00.000+0000`` (UTC, milliseconds)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _bad_value(spec: FieldDef, value: Any, kind: str) -> SalesforceError:
    return SalesforceError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {type(value).__name__} value {value!r} "
        f"for field {spec.name}",
        [spec.name],
    )


def coerce(spec: FieldDef, value: Any) -> Any:
    """``value`` as stored for field ``spec``; raises :class:`SalesforceError` (400) for a
    value of the wrong type, too long, outside the number's range, or not in a restricted
    picklist."""
    if value is None:
        return None
    kind = spec.type
    if kind in TEXT_TYPES or kind == "reference":
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
            raise _bad_value(spec, value, "string")
        text = str(value)
        if kind == "reference":
            if not is_id(text):
                raise SalesforceError(
                    400,
                    "MALFORMED_ID",
                    f"{spec.label or spec.name}: id value of incorrect type: {text}",
                    [spec.name],
                )
            return id18(text)
        if len(text) > spec.length:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{spec.label or spec.name}: data value too large: {text[:40]} "
                f"(max length={spec.length})",
                [spec.name],
            )
        if kind == "email" and text and not _EMAIL.match(text):
            raise SalesforceError(
                400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {text}", [spec.name]
            )
        if kind == "picklist" and spec.restricted_picklist and text not in spec.picklist:
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.label or spec.name}: bad value for restricted picklist field: {text}",
                [spec.name],
            )
        return text
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _bad_value(spec, value, "boolean")
        return value
    if kind in NUMBER_TYPES:
        return _number(spec, value)
    if kind == "date":
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise _bad_value(spec, value, "date") from None
    try:  # datetime
        return timestamp(parse_instant(str(value)))
    except ValueError:
        raise _bad_value(spec, value, "datetime") from None


def _number(spec: FieldDef, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _bad_value(spec, value, "double")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _bad_value(spec, value, "double") from None
    if spec.type == "int":
        if number != number.to_integral_value():
            raise _bad_value(spec, value, "int")
        return int(number)
    number = round(number, spec.scale)
    whole_digits = len(str(abs(int(number)))) if number else 0
    if spec.precision and whole_digits > spec.precision - spec.scale:
        raise SalesforceError(
            400,
            "NUMBER_OUTSIDE_VALID_RANGE",
            f"{spec.label or spec.name}: value outside of valid range on numeric field: {value}",
            [spec.name],
        )
    return float(number)


def clean(sobject: SObjectDef, values: dict[str, Any], creating: bool) -> dict[str, Any]:
    """A request body's field values, checked and coerced, under the fields' own names.

    Raises :class:`SalesforceError`: ``INVALID_FIELD`` for an unknown field,
    ``INVALID_FIELD_FOR_INSERT_UPDATE`` for a read-only one, ``REQUIRED_FIELD_MISSING`` when a
    required field is blanked (on create :func:`require` checks what is missing), and the
    value errors of :func:`coerce`.
    """
    cleaned: dict[str, Any] = {}
    for name, value in values.items():
        if name == "attributes":
            continue
        spec = sobject.field(name)
        if spec is None:
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {sobject.name}",
                [name],
            )
        if not (spec.createable if creating else spec.updateable):
            raise SalesforceError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to {'create' if creating else 'update'} fields: {spec.name}. Please "
                "check the security settings of this field and verify that it is read/write "
                "for your profile or permission set.",
                [spec.name],
            )
        coerced = coerce(spec, value)
        if coerced is None and not spec.nillable:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{spec.name}]",
                [spec.name],
            )
        cleaned[spec.name] = coerced
    return cleaned


def require(sobject: SObjectDef, values: dict[str, Any]) -> None:
    """On create: every required field (not nillable, createable, not defaulted) is given.
    Raises ``REQUIRED_FIELD_MISSING`` naming all that are missing."""
    missing = [
        f.name
        for f in sobject.fields.values()
        if f.createable and not f.nillable and not f.defaulted_on_create and f.type != "boolean"
        if values.get(f.name) is None
    ]
    if missing:
        raise SalesforceError(
            400,
            "REQUIRED_FIELD_MISSING",
            f"Required fields are missing: [{', '.join(missing)}]",
            missing,
        )
