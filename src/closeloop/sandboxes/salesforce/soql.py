"""The SOQL subset integrations use: parse a query, evaluate it over records.

Grammar (Salesforce *SOQL and SOSL Reference*, "SOQL SELECT Syntax")::

    SELECT item [, item ...] FROM object
    item       := field | COUNT() | ( SELECT field [, ...] FROM childRelationship
                                      [WHERE ...] [ORDER BY ...] [LIMIT n] )
      [WHERE condition] [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST] [, ...]]
      [LIMIT n] [OFFSET n]

    condition  := term {OR term}        term := factor {AND factor}
    factor     := NOT factor | ( condition ) | field op value
                | field [NOT] IN ( value [, value ...] )
    op         := = | != | <> | < | <= | > | >= | LIKE
    value      := 'text' | number | true | false | null | YYYY-MM-DD
                | YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm)

Fields may be relationship paths (``Account.Name``). Keywords are case-insensitive, as in
Salesforce; field names are matched case-insensitively too. A query outside this subset is a
:class:`MalformedQuery` with Salesforce's error code and a message naming the token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from closeloop.sandboxes.salesforce.records import parse_instant

Value = str | Decimal | bool | date | datetime | None


class MalformedQuery(ValueError):
    """``MALFORMED_QUERY``: the query is not valid SOQL (of the supported subset)."""

    error_code = "MALFORMED_QUERY"


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "in",
    "like",
    "order",
    "by",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "limit",
    "offset",
    "true",
    "false",
    "null",
}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


def tokenize(query: str) -> list[Token]:
    """Split ``query`` into tokens; raises :class:`MalformedQuery` at an unknown character."""
    tokens, position = [], 0
    query = query.rstrip()
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise MalformedQuery(f"unexpected token: '{query[position:].split()[0]}'")
        group = match.lastgroup or ""
        text, start = match.group(group), match.start(group)
        kind = "keyword" if group == "word" and text.lower() in _KEYWORDS else group
        tokens.append(Token(kind, text, start))
        position = match.end()
    return tokens


@dataclass(frozen=True)
class Comparison:
    """``field op value`` or ``field [NOT] IN (values)``."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Logical:
    """``AND``/``OR`` of parts, or ``NOT`` of one."""

    op: str
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Order:
    """One ``ORDER BY`` item."""

    field: str
    descending: bool = False
    nulls_last: bool | None = None


@dataclass(frozen=True)
class Query:
    """A parsed query. ``fields`` holds field paths and, for child relationship subqueries,
    nested :class:`Query` objects whose ``sobject`` is the relationship name; ``count`` is
    ``SELECT COUNT()``."""

    fields: tuple[str | Query, ...]
    sobject: str
    where: Any = None
    order: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int = 0
    count: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        """The selected field paths (subqueries left out)."""
        return tuple(f for f in self.fields if isinstance(f, str))


@dataclass
class _Parser:
    tokens: list[Token]
    index: int = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def comma(self) -> bool:
        """Consume a ``,`` when it comes next."""
        token = self.peek()
        if token is not None and token.text == ",":
            self.index += 1
            return True
        return False

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return bool(token and token.kind == "keyword" and token.text.lower() in words)

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise MalformedQuery("unexpected end of query")
        self.index += 1
        return token

    def expect_keyword(self, word: str) -> None:
        token = self.take()
        if token.kind != "keyword" or token.text.lower() != word:
            raise MalformedQuery(f"unexpected token: '{token.text}' (expecting '{word.upper()}')")

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise MalformedQuery(f"unexpected token: '{token.text}' (expecting '{text}')")

    def name(self) -> str:
        token = self.take()
        if token.kind != "word":
            raise MalformedQuery(f"unexpected token: '{token.text}' (expecting a field name)")
        return token.text

    def item(self, nested: bool) -> str | Query:
        token = self.peek()
        if token is not None and token.text == "(" and not nested:
            self.take()
            sub = self.query(nested=True)
            self.expect(")")
            return sub
        name = self.name()
        following = self.peek()
        if name.lower() == "count" and following is not None and following.text == "(":
            self.take()
            self.expect(")")
            return "COUNT()"
        return name

    def query(self, nested: bool = False) -> Query:
        self.expect_keyword("select")
        fields = [self.item(nested)]
        while self.comma():
            fields.append(self.item(nested))
        count = fields == ["COUNT()"]
        if "COUNT()" in fields and not count:
            raise MalformedQuery("COUNT() cannot be combined with other fields")
        self.expect_keyword("from")
        sobject = self.name()
        where = None
        if self.keyword("where"):
            self.take()
            where = self.condition()
        order: list[Order] = []
        if self.keyword("order"):
            self.take()
            self.expect_keyword("by")
            order.append(self.order_item())
            while self.comma():
                order.append(self.order_item())
        limit = offset = None
        if self.keyword("limit"):
            self.take()
            limit = self.integer("LIMIT")
        if self.keyword("offset"):
            self.take()
            offset = self.integer("OFFSET")
        following = self.peek()
        if following is not None and not (nested and following.text == ")"):
            raise MalformedQuery(f"unexpected token: '{self.take().text}'")
        return Query(
            tuple(() if count else fields), sobject, where, tuple(order), limit, offset or 0, count
        )

    def integer(self, clause: str) -> int:
        token = self.take()
        if token.kind != "number" or "." in token.text or token.text.startswith("-"):
            raise MalformedQuery(f"{clause} needs a non-negative whole number, not '{token.text}'")
        return int(token.text)

    def order_item(self) -> Order:
        name = self.name()
        descending, nulls_last = False, None
        if self.keyword("asc", "desc"):
            descending = self.take().text.lower() == "desc"
        if self.keyword("nulls"):
            self.take()
            if not self.keyword("first", "last"):
                raise MalformedQuery("NULLS needs FIRST or LAST")
            nulls_last = self.take().text.lower() == "last"
        return Order(name, descending, nulls_last)

    def condition(self) -> Any:
        parts = [self.term()]
        while self.keyword("or"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Logical("or", tuple(parts))

    def term(self) -> Any:
        parts = [self.factor()]
        while self.keyword("and"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else Logical("and", tuple(parts))

    def factor(self) -> Any:
        if self.keyword("not"):
            self.take()
            return Logical("not", (self.factor(),))
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            inner = self.condition()
            self.expect(")")
            return inner
        name = self.name()
        negated = False
        if self.keyword("not"):
            self.take()
            negated = True
            if not self.keyword("in"):
                raise MalformedQuery("NOT after a field must be followed by IN")
        if self.keyword("in"):
            self.take()
            self.expect("(")
            values = [self.value()]
            while self.comma():
                values.append(self.value())
            self.expect(")")
            return Comparison(name, "not in" if negated else "in", tuple(values))
        operator = self.take()
        if operator.kind == "keyword" and operator.text.lower() == "like":
            return Comparison(name, "like", self.value())
        if operator.kind != "op":
            raise MalformedQuery(f"unexpected token: '{operator.text}' (expecting an operator)")
        op = "!=" if operator.text == "<>" else operator.text
        return Comparison(name, op, self.value())

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "number":
            return Decimal(token.text)
        if token.kind == "date":
            return date.fromisoformat(token.text)
        if token.kind == "datetime":
            return datetime.fromisoformat(token.text.replace("Z", "+00:00"))
        if token.kind == "keyword" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if token.kind == "keyword" and token.text.lower() == "null":
            return None
        raise MalformedQuery(f"unexpected token: '{token.text}' (expecting a value)")


def parse(query: str) -> Query:
    """Parse ``query``; raises :class:`MalformedQuery`."""
    return _Parser(tokenize(query)).query()


# --- evaluation ---------------------------------------------------------------------------
def get_path(record: dict[str, Any], path: str) -> Any:
    """The value at a (case-insensitive) dotted field path; ``None`` when absent."""
    node: Any = record
    for step in path.split("."):
        if not isinstance(node, dict):
            return None
        if step in node:
            node = node[step]
            continue
        key = next((k for k in node if k.lower() == step.lower()), None)
        node = node.get(key) if key is not None else None
    return node


def _coerce(value: Any, like: Any) -> Any:
    """Record values arrive as JSON (strings, floats): compare in the literal's type."""
    if value is None or like is None:
        return value
    try:
        if isinstance(like, bool):
            return value if isinstance(value, bool) else str(value).lower() == "true"
        if isinstance(like, Decimal):
            return Decimal(str(value))
        if isinstance(like, datetime):
            return parse_instant(str(value))
        if isinstance(like, date):
            return date.fromisoformat(str(value)[:10])
    except (ValueError, ArithmeticError):
        return None
    return value


def _like(value: Any, pattern: str) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return (
        value is not None and re.fullmatch(regex, str(value), re.IGNORECASE | re.DOTALL) is not None
    )


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a is not None and b is not None and a < b,
    "<=": lambda a, b: a is not None and b is not None and a <= b,
    ">": lambda a, b: a is not None and b is not None and a > b,
    ">=": lambda a, b: a is not None and b is not None and a >= b,
}


def matches(condition: Any, record: dict[str, Any]) -> bool:
    """Whether ``record`` satisfies a parsed ``WHERE`` condition (``None``: always)."""
    if condition is None:
        return True
    if isinstance(condition, Logical):
        if condition.op == "and":
            return all(matches(p, record) for p in condition.parts)
        if condition.op == "or":
            return any(matches(p, record) for p in condition.parts)
        return not matches(condition.parts[0], record)
    raw = get_path(record, condition.field)
    if condition.op in ("in", "not in"):
        found = any(_coerce(raw, v) == v for v in condition.value)
        return found if condition.op == "in" else not found
    if condition.op == "like":
        return _like(raw, str(condition.value))
    value = _coerce(raw, condition.value)
    if isinstance(value, str) and isinstance(condition.value, str) and condition.op in ("=", "!="):
        equal = value.lower() == condition.value.lower()  # text equality ignores case in SOQL
        return equal if condition.op == "=" else not equal
    return _COMPARE[condition.op](value, condition.value)


def _sort_key(order: Order) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """SOQL ordering of one item: nulls first ascending and last descending unless NULLS
    says otherwise; text ignores case."""
    nulls_first = (not order.descending) if order.nulls_last is None else not order.nulls_last
    null_rank = 0 if nulls_first != order.descending else 1  # the sort may run reversed

    def key(record: dict[str, Any]) -> tuple[int, Any]:
        value = get_path(record, order.field)
        if value is None:
            return (null_rank, "")
        return (1 - null_rank, value.lower() if isinstance(value, str) else value)

    return key


def run(query: Query, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Filter, order, offset and limit ``records`` (full records; projection is the
    caller's). Ordering is stable: ties keep the records' order."""
    selected = [r for r in records if matches(query.where, r)]
    for order in reversed(query.order):  # stable sorts, last item first
        selected.sort(key=_sort_key(order), reverse=order.descending)
    selected = selected[query.offset :]
    return selected if query.limit is None else selected[: query.limit]


def project(query: Query, record: dict[str, Any]) -> dict[str, Any]:
    """The selected fields of ``record``, relationship fields as nested objects."""
    out: dict[str, Any] = {}
    for path in query.paths:
        *parents, leaf = path.split(".")
        node = out
        for step in parents:
            node = node.setdefault(step, {})
        node[leaf] = get_path(record, path)
    return out
