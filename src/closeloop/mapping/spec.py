"""The shape of a mapping file (validated with pydantic; see ``closeloop.example.yaml``).

A file maps one connection's vendor objects::

    version: 1
    connection: salesforce
    value_maps:
      stages: {"Closed Won": closed_won, ...}
    objects:
      Account:
        canonical: account
        fields:
          legal_name: Name                       # a vendor path (dots for nesting)
          country: {path: BillingCountry, value_map: countries}
          currency: {path: CurrencyIsoCode, default: EUR}
          billing_address.line1: BillingStreet   # dots in a target build nested records
    ownership:
      account: {legal_name: erp, tax_ids: erp}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Format = Literal[
    "date", "datetime", "decimal", "negated", "integer", "boolean", "text", "upper", "lower"
]


class Condition(BaseModel):
    """``only_if`` of a rule: the vendor value at ``path`` (``$.`` reads the whole record
    from inside an ``each`` rule) is ``equals``, or one of ``equals`` when it is a list;
    values are compared as text (``Inclusive``, ``PAID``)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    equals: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, data: Any) -> Any:
        if isinstance(data, dict) and not isinstance(data.get("equals", []), list):
            return {**data, "equals": [data["equals"]]}
        return data

    @model_validator(mode="after")
    def _some(self) -> Condition:
        if not self.equals:
            raise ValueError("equals needs a value or a list of values")
        return self


class FieldRule(BaseModel):
    """How one canonical field gets its value. Exactly one source: ``path``, ``const``,
    ``concat``, ``coalesce`` (the first non-empty of several paths) or ``sum``; then, in
    order, ``format``, ``value_map`` (+ ``pick``), ``default``.

    ``path``: dotted vendor path (``Account.Name``, ``client.id``, ``lines.0.amount``).
    ``concat``: parts joined by ``sep``; a part starting with ``=`` is literal text.
    ``sum``: the decimal sum of the numbers at several paths, a part starting with ``-``
    subtracted (``[LineAmount, -TaxAmount]``); an absent part counts as zero, and there is no
    value when every part is absent (guard with ``when`` where an absent part means unknown).
    ``only_if``: a :class:`Condition` on the record; when it does not hold the rule's source
    has no value (so ``otherwise``, then ``default``, give it): ``{sum: [LineAmount,
    -TaxAmount], only_if: {path: $.LineAmountTypes, equals: Inclusive}, otherwise:
    LineAmount}``.
    ``format``: ``date``/``datetime`` (with ``input_format``, a ``strptime`` pattern),
    ``decimal`` (with ``decimal_separator``), ``negated`` (a decimal with its sign turned: a
    credit note's amounts where the vendor keeps them positive), ``integer``, ``boolean``,
    ``text``, ``upper``, ``lower``. ``value_map``: a named map of the file, or an inline
    one; a value absent from the map is a mapping problem, unless ``default`` is given or
    ``keep_unmapped`` passes it through unchanged (for maps of spelling variants). ``pick``:
    when map values are objects (a product -> ``{task, rate}``), the key to take.
    ``as_list``: wrap a single value in a list. ``when``: set the field only when that
    vendor path has a value (a currency constant only when there is an amount). ``each``:
    map every element of a vendor list with nested rules. ``otherwise``: a nested rule
    giving the value when the source has none (before ``default``): a deal's legal entity
    from the opportunity, else by its account's country.
    """

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    const: Any = None
    concat: list[str] | None = None
    coalesce: list[str] | None = None
    sum: list[str] | None = None
    only_if: Condition | None = None
    sep: str = " "
    format: Format | None = None
    input_format: str | None = None
    decimal_separator: str = "."
    value_map: str | dict[str, Any] | None = None
    keep_unmapped: bool = False
    pick: str | None = None
    default: Any = None
    as_list: bool = False
    when: str | None = None
    each: dict[str, FieldRule] | None = None
    otherwise: FieldRule | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldRule:
        sources = [
            n
            for n in ("path", "const", "concat", "coalesce", "sum")
            if getattr(self, n) is not None
        ]
        if len(sources) > 1:
            raise ValueError(f"give one source, not {' and '.join(sources)}")
        if not sources and self.default is None:
            raise ValueError(
                "give a path, a const, a concat, a coalesce, a sum or at least a default"
            )
        if self.sum is not None and (
            not self.sum or any(not p.removeprefix("-").strip() for p in self.sum)
        ):
            raise ValueError("sum needs vendor paths, each optionally prefixed with '-'")
        if self.each is not None and self.path is None:
            raise ValueError("each needs the path of a vendor list")
        if self.input_format and self.format not in ("date", "datetime"):
            raise ValueError("input_format goes with format: date or datetime")
        return self


class ObjectMapping(BaseModel):
    """The mapping of one vendor object onto one canonical type."""

    model_config = ConfigDict(extra="forbid")

    canonical: str
    fields: dict[str, FieldRule]


class MappingSpec(BaseModel):
    """One mapping file: a connection's objects, value maps and field ownership."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    connection: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    value_maps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    objects: dict[str, ObjectMapping]
    ownership: dict[str, dict[str, str]] = Field(default_factory=dict)
