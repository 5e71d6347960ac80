"""Apply a mapping to a vendor payload: every problem is reported with its field path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from closeloop.domain.canonical import CANONICAL_TYPES
from closeloop.domain.records import MappingError
from closeloop.mapping.spec import Condition, FieldRule, MappingSpec, ObjectMapping

_MISSING = object()
_ABSENT = (_MISSING, None, "")


@dataclass(frozen=True, slots=True)
class Problem:
    """One mapping problem: the canonical field ``path``, the vendor ``source`` it came from
    (when known) and what is wrong."""

    path: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.path} (from {self.source})" if self.source else self.path
        return f"{where}: {self.message}"


@dataclass
class MappingResult:
    """The canonical record (JSON-ready dict) when every field mapped and validated, else
    ``None`` with the list of every problem."""

    canonical_type: str
    data: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem."""
        return not self.problems


_FILTER = re.compile(r"^(?P<name>[^\[]+)\[(?P<key>[^=\]]+)=(?P<value>[^\]]*)\]$")
_DOTNET_DATE = re.compile(r"^/Date\((?P<ms>-?\d+)(?P<zone>[+-]\d{4})?\)/$")


def read_path(payload: Any, path: str, root: Any = None) -> Any:
    """The value at dotted ``path`` of ``payload``, or a marker object when a step is absent;
    a JSON ``null`` on the way reads as ``None``.

    Steps are dict keys, list indexes (``lines.0``) or list filters
    (``Addresses[AddressType=POBOX]``: the first element whose key has that value). A path
    starting with ``$.`` reads from ``root`` (the whole record, from inside an ``each`` rule).
    """
    node = payload
    if path.startswith("$."):
        node, path = (payload if root is None else root), path[2:]
    for step in path.split("."):
        if node is None:
            return None
        matched = _FILTER.match(step)
        if matched:
            items = node.get(matched["name"]) if isinstance(node, dict) else None
            if not isinstance(items, list):
                return _MISSING
            node = next(
                (
                    i
                    for i in items
                    if isinstance(i, dict) and str(i.get(matched["key"])) == matched["value"]
                ),
                _MISSING,
            )
            if node is _MISSING:
                return _MISSING
        elif isinstance(node, dict):
            if step not in node:
                return _MISSING
            node = node[step]
        elif isinstance(node, list) and step.isdigit():
            index = int(step)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _source(rule: FieldRule) -> str | None:
    """Where a rule reads from, for messages: ``Name``, ``A or B``, ``A + B``, ``A - B``."""
    if rule.coalesce:
        return " or ".join(rule.coalesce)
    if rule.concat:
        return " + ".join(p for p in rule.concat if not p.startswith("="))
    if rule.sum:
        first, *rest = rule.sum
        signed = [f"- {p[1:]}" if p.startswith("-") else f"+ {p}" for p in rest]
        return " ".join([first, *signed])
    return rule.path


def _holds(condition: Condition, payload: Any, root: Any) -> bool:
    """Whether the value at the condition's path is one of its values (as text)."""
    value = read_path(payload, condition.path, root)
    if value is _MISSING or value is None:
        return False
    return str(value) in {str(v) for v in condition.equals}


def _sum(parts: list[str], payload: Any, root: Any) -> Any:
    """The decimal sum (as text) of the numbers at ``parts`` (``-Path`` subtracted), absent
    ones counting as zero; ``_MISSING`` when all are absent. Raises ``ValueError`` naming a
    value that is not a number."""
    total, seen = Decimal(0), False
    for part in parts:
        path = part.removeprefix("-")
        value = read_path(payload, path, root)
        if value is _MISSING or value is None or value == "":
            continue
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            number = Decimal(str(_plain(value)).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} at {path} is not a decimal number") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} at {path} is not a decimal number")
        total += -number if part.startswith("-") else number
        seen = True
    return str(total) if seen else _MISSING


def _plain(value: Any) -> Any:
    """JSON floats become Decimals through their shortest repr (2.11 -> Decimal('2.11'))."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Mapper:
    """Maps payloads of one connection with a :class:`MappingSpec`."""

    def __init__(self, spec: MappingSpec) -> None:
        self.spec = spec

    def object_mapping(self, vendor_object: str) -> ObjectMapping:
        """The mapping of ``vendor_object``; ``KeyError`` naming the mapped ones otherwise."""
        try:
            return self.spec.objects[vendor_object]
        except KeyError:
            known = ", ".join(sorted(self.spec.objects)) or "none"
            raise KeyError(
                f"{self.spec.connection} has no mapping for {vendor_object!r} (mapped: {known})"
            ) from None

    def objects_for(self, canonical_type: str) -> list[str]:
        """The vendor objects this connection maps onto ``canonical_type``, in file order.
        Raises ``KeyError`` when none does."""
        found = [o for o, m in self.spec.objects.items() if m.canonical == canonical_type]
        if not found:
            raise KeyError(
                f"{self.spec.connection} maps no object onto {canonical_type!r}; a flow needs one"
            )
        return found

    def map(self, vendor_object: str, payload: dict[str, Any]) -> MappingResult:
        """Map ``payload`` of ``vendor_object``; never raises for bad data, lists problems."""
        mapping = self.object_mapping(vendor_object)
        result = MappingResult(mapping.canonical)
        data = self._fields(mapping.fields, payload, "", result.problems, payload)
        model = CANONICAL_TYPES.get(mapping.canonical)
        if model is None:
            result.problems.append(Problem("", f"unknown canonical type {mapping.canonical!r}"))
            return result
        try:
            record = model.model_validate(data)
        except ValidationError as exc:
            reported = {p.path for p in result.problems}
            for error in exc.errors():
                path = ".".join(str(p) for p in error["loc"])
                if path in reported:  # the mapping already said why the value is missing
                    continue
                rule = mapping.fields.get(path)
                message = error["msg"].removeprefix("Value error, ")
                result.problems.append(
                    Problem(path or mapping.canonical, message, _source(rule) if rule else None)
                )
        if not result.problems:
            result.data = record.model_dump(mode="json")
        return result

    def mapper_for(self, vendor_object: str) -> Any:
        """A :class:`~closeloop.ports.flows.Mapper` for the engine: raises
        :class:`~closeloop.domain.records.MappingError` with every problem."""
        self.object_mapping(vendor_object)

        def mapper(change: Any) -> dict[str, Any]:
            result = self.map(vendor_object, change.payload)
            if not result.ok or result.data is None:
                raise MappingError([str(p) for p in result.problems])
            return result.data

        return mapper

    def _fields(
        self,
        rules: dict[str, FieldRule],
        payload: Any,
        prefix: str,
        problems: list[Problem],
        root: Any,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target, rule in rules.items():
            if rule.when is not None and read_path(payload, rule.when, root) in _ABSENT:
                continue
            value = self._value(rule, payload, f"{prefix}{target}", problems, root)
            if value is _MISSING:
                continue
            node = out
            *parents, leaf = target.split(".")
            for step in parents:
                node = node.setdefault(step, {})
            node[leaf] = value
        return out

    def _value(
        self, rule: FieldRule, payload: Any, target: str, problems: list[Problem], root: Any
    ) -> Any:
        if rule.only_if is not None and not _holds(rule.only_if, payload, root):
            value = _MISSING
        elif rule.path is not None:
            value = read_path(payload, rule.path, root)
        elif rule.sum is not None:
            try:
                value = _sum(rule.sum, payload, root)
            except ValueError as exc:
                problems.append(Problem(target, str(exc), _source(rule)))
                return _MISSING
        elif rule.concat is not None:
            parts = [
                p[1:] if p.startswith("=") else read_path(payload, p, root) for p in rule.concat
            ]
            kept = [str(p) for p in parts if p is not _MISSING and p not in (None, "")]
            value = rule.sep.join(kept) if kept else _MISSING
        elif rule.coalesce is not None:
            found = (read_path(payload, p, root) for p in rule.coalesce)
            value = next((v for v in found if v is not _MISSING and v not in (None, "")), _MISSING)
        elif rule.const is not None:
            value = rule.const
        else:
            value = _MISSING
        if (value is _MISSING or value is None or value == "") and rule.otherwise is not None:
            value = self._value(rule.otherwise, payload, target, problems, root)
            if value is not _MISSING:
                return value
        if value is _MISSING or value is None or value == "":
            return rule.default if rule.default is not None else _MISSING
        value = _plain(value)
        if rule.each is not None:
            return self._each(rule, value, target, problems, root)
        try:
            value = _format(rule, value)
        except ValueError as exc:
            problems.append(Problem(target, str(exc), _source(rule)))
            return _MISSING
        if rule.value_map is not None:
            value = self._lookup(rule, value, target, problems)
            if value is _MISSING:
                return _MISSING
        return [value] if rule.as_list and not isinstance(value, list) else value

    def _each(
        self, rule: FieldRule, value: Any, target: str, problems: list[Problem], root: Any
    ) -> Any:
        if not isinstance(value, list):
            problems.append(
                Problem(target, f"expected a list, got {type(value).__name__}", rule.path)
            )
            return _MISSING
        nested = rule.each or {}
        return [
            self._fields(nested, item, f"{target}.{i}.", problems, root)
            for i, item in enumerate(value)
        ]

    def _lookup(self, rule: FieldRule, value: Any, target: str, problems: list[Problem]) -> Any:
        name = rule.value_map if isinstance(rule.value_map, str) else "inline"
        table = (
            self.spec.value_maps.get(name, {})
            if isinstance(rule.value_map, str)
            else rule.value_map
        )
        key = str(value)
        if key not in (table or {}):
            if rule.keep_unmapped:
                return value
            if rule.default is not None:
                return rule.default
            problems.append(Problem(target, f"{key!r} is not in value map {name}", _source(rule)))
            return _MISSING
        mapped = (table or {})[key]
        if rule.pick is not None:
            if not isinstance(mapped, dict) or rule.pick not in mapped:
                problems.append(
                    Problem(target, f"value map {name}[{key!r}] has no {rule.pick!r}", rule.path)
                )
                return _MISSING
            mapped = mapped[rule.pick]
        return mapped


def _format(rule: FieldRule, value: Any) -> Any:
    """Apply ``rule.format``; raises ``ValueError`` with what was expected."""
    fmt = rule.format
    if fmt is None:
        return value
    text = str(value).strip()
    if fmt in ("date", "datetime"):
        dotnet = _DOTNET_DATE.match(text)
        try:
            if dotnet:  # "/Date(1539993600000+0000)/", as Xero sends (.NET JSON dates)
                zone = dotnet["zone"] or "+0000"
                offset = timedelta(hours=int(zone[:3]), minutes=int(zone[0] + zone[3:]))
                moment = datetime.fromtimestamp(int(dotnet["ms"]) / 1000, UTC).astimezone(
                    timezone(offset)
                )
            elif rule.input_format:
                moment = datetime.strptime(text, rule.input_format)  # noqa: DTZ007
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            expected = rule.input_format or "ISO 8601"
            raise ValueError(f"{text!r} is not a {fmt} in {expected}") from None
        return moment.date().isoformat() if fmt == "date" else moment.isoformat()
    if fmt in ("decimal", "negated"):
        cleaned = text.replace(" ", "")
        if rule.decimal_separator != ".":
            cleaned = cleaned.replace(".", "").replace(rule.decimal_separator, ".")
        try:
            number = Decimal(cleaned)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a decimal number") from None
        return str(-number if fmt == "negated" else number)
    if fmt == "integer":
        try:
            return int(Decimal(text))
        except (InvalidOperation, ValueError):
            raise ValueError(f"{text!r} is not a whole number") from None
    if fmt == "boolean":
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "y"):
            return True
        if lowered in ("false", "0", "no", "n"):
            return False
        raise ValueError(f"{text!r} is not a yes/no value")
    if fmt == "upper":
        return text.upper()
    if fmt == "lower":
        return text.lower()
    return text
