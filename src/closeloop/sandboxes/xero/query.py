"""Xero's ``where`` and ``order`` query parameters, for every list endpoint.

``where`` (Xero's "Requests and responses" page, "Filters"): clauses joined by ``AND``/``&&``
and ``OR``/``||`` (``AND`` binds tighter; parentheses group), each clause one of

- ``Path == value`` or ``Path != value``, where ``Path`` is a field or a nested field
  (``Contact.ContactID``) and ``value`` is ``"text"``, ``guid("...")`` (or ``GUID``),
  ``true``/``false``, ``null``, a number or ``DateTime(2026, 01, 31)``;
- ``Path > value`` (and ``>=``, ``<``, ``<=``) on numbers and dates;
- ``Path.StartsWith("text")``, ``Path.EndsWith("text")``, ``Path.Contains("text")``.

Clauses are matched against a record as the API answers it (``Date`` is a .NET date
compared with ``DateTime(...)``). Text compares case-insensitively (the sandbox's choice;
Xero does not document it). A field a record lacks is ``null``: it equals ``null`` and
matches no other clause (Xero may answer an error there; its documentation advises
``Field!=null&&...``). Anything else is a 400 ``QueryParseException``, never a filter
silently ignored.

``order``: ``Path [ASC|DESC]`` joined by commas (``"Name ASC"``, ``"UpdatedDateUTC DESC"``);
records without the field come first in ``ASC``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from closeloop.sandboxes.xero.wire import XeroError, bad_request

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?\d+(?:\.\d+)?)'
    r"|(?P<op>==|!=|>=|<=|&&|\|\||[<>(),.])|(?P<name>[A-Za-z_]\w*))"
)
_MSDATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_METHODS = {"startswith", "endswith", "contains"}
_ORDERING = {">", ">=", "<", "<="}


def _refuse(text: str) -> XeroError:
    return bad_request("QueryParseException", f"The sandbox cannot parse: {text}", number=16)


def _tokens(expression: str) -> list[tuple[str, str]]:
    found, position = [], 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _refuse(expression)
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    """Recursive descent over the tokens of one ``where`` expression."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokens(expression)
        self.at = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        token_kind, token = self.peek()
        if (value is not None and token.lower() != value) or (kind and token_kind != kind):
            raise _refuse(self.expression)
        self.at += 1
        return token

    def joined(self, words: tuple[str, str], inner: Callable[[], Predicate]) -> list[Predicate]:
        parts = [inner()]
        while self.peek()[1].lower() in words:
            self.at += 1
            parts.append(inner())
        return parts

    def either(self) -> Predicate:
        parts = self.joined(("or", "||"), self.both)
        return lambda record: any(part(record) for part in parts)

    def both(self) -> Predicate:
        parts = self.joined(("and", "&&"), self.clause)
        return lambda record: all(part(record) for part in parts)

    def clause(self) -> Predicate:
        if self.peek()[1] == "(":
            self.take("(")
            inner = self.either()
            self.take(")")
            return inner
        path = [self.take(kind="name")]
        while self.peek()[1] == ".":
            self.take(".")
            name = self.take(kind="name")
            if name.lower() in _METHODS and self.peek()[1] == "(":
                self.take("(")
                text = _unquote(self.take(kind="string"))
                self.take(")")
                return _method(path, name.lower(), text)
            path.append(name)
        op = self.take(kind="op")
        if op not in ("==", "!=", *_ORDERING):
            raise _refuse(self.expression)
        return _compare(path, op, self.value())

    def value(self) -> Any:
        kind, token = self.peek()
        if kind == "string":
            self.at += 1
            return _unquote(token)
        if kind == "number":
            self.at += 1
            return Decimal(token)
        word = self.take(kind="name").lower()
        if word in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[word]
        self.take("(")
        if word == "guid":
            text = _unquote(self.take(kind="string"))
            self.take(")")
            return _Guid(text.lower())
        if word == "datetime":
            numbers = [int(self.take(kind="number"))]
            while self.peek()[1] == ",":
                self.take(",")
                numbers.append(int(self.take(kind="number")))
            self.take(")")
            if not 3 <= len(numbers) <= 6:
                raise _refuse(self.expression)
            try:
                year, month, day, hour, minute, second = (*numbers, 0, 0, 0)[:6]
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except ValueError:
                raise _refuse(self.expression) from None
        raise _refuse(self.expression)


class _Guid(str):
    """A ``guid("...")`` value (compared as lowercase text)."""


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def _lookup(record: Record, path: list[str]) -> Any:
    value: Any = record
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value).lower()


def _moment(value: Any) -> datetime | None:
    found = _MSDATE.match(value) if isinstance(value, str) else None
    return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC) if found else None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _method(path: list[str], name: str, text: str) -> Predicate:
    wanted = text.lower()

    def matches(record: Record) -> bool:
        value = _lookup(record, path)
        if not isinstance(value, str):
            return False
        value = value.lower()
        if name == "startswith":
            return value.startswith(wanted)
        return value.endswith(wanted) if name == "endswith" else wanted in value

    return matches


def _compare(path: list[str], op: str, wanted: Any) -> Predicate:
    def equal(value: Any) -> bool:
        if wanted is None or value is None:
            return value is wanted
        if isinstance(wanted, bool):
            return value is wanted
        if isinstance(wanted, datetime):
            return _moment(value) == wanted
        if isinstance(wanted, Decimal):
            return _number(value) == wanted
        return _text(value) == str(wanted).lower()

    def ordered(value: Any) -> bool:
        if isinstance(wanted, datetime):
            left: Any = _moment(value)
        elif isinstance(wanted, Decimal):
            left = _number(value)
        elif isinstance(wanted, str) and isinstance(value, str):
            left, right = value.lower(), wanted.lower()
            return bool(_OPS[op](left, right))
        else:
            return False
        return left is not None and bool(_OPS[op](left, wanted))

    def matches(record: Record) -> bool:
        value = _lookup(record, path)
        if op == "==":
            return equal(value)
        if op == "!=":
            return not equal(value)
        return ordered(value)

    return matches


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def where(expression: str) -> Predicate:
    """A predicate for Xero's ``where`` parameter (see the module's docstring). Raises
    :class:`~.wire.XeroError` 400 ``QueryParseException`` when it cannot be parsed."""
    parser = _Parser(expression)
    if not parser.tokens:
        raise _refuse(expression)
    predicate = parser.either()
    if parser.at != len(parser.tokens):
        raise _refuse(expression)
    return predicate


def _sort_key(value: Any) -> tuple[int, int, Any]:
    if value is None:
        return (0, 0, 0)
    moment = _moment(value)
    if moment is not None:
        return (1, 0, moment)
    if isinstance(value, bool):
        return (1, 1, int(value))
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return (1, 1, number)
    return (1, 2, str(value).lower())


def order(rows: list[Record], expression: str) -> list[Record]:
    """``rows`` sorted by Xero's ``order`` parameter (``"Name ASC, Code DESC"``); stable,
    so rows equal on every key keep their order. Raises :class:`~.wire.XeroError` 400
    ``QueryParseException`` when it cannot be parsed."""
    keys = []
    for part in expression.split(","):
        found = re.fullmatch(r"\s*([A-Za-z_][\w.]*)(?:\s+(ASC|DESC))?\s*", part, re.IGNORECASE)
        if found is None:
            raise _refuse(expression)
        keys.append((found.group(1).split("."), (found.group(2) or "ASC").upper() == "DESC"))
    for path, descending in reversed(keys):

        def key(row: Record, path: list[str] = path) -> tuple[int, int, Any]:
            return _sort_key(_lookup(row, path))

        rows = sorted(rows, key=key, reverse=descending)
    return rows
