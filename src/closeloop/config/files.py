"""Configuration and mapping files: loading with line numbers, checking, default mappings.

``closeloop check`` and ``closeloop map`` use this; every problem names its file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from closeloop.config import Settings
from closeloop.domain.errors import InputError
from closeloop.mapping.engine import Mapper
from closeloop.mapping.spec import FieldRule, MappingSpec
from closeloop.mapping.targets import resolve, root_models
from closeloop.mdm.ownership import OwnershipPolicy

Lines = dict[tuple[Any, ...], int]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem in a file: ``file:line: message`` (line 0 when unknown)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message}"
            if self.line
            else f"{self.file}: {self.message}"
        )


class FileProblems(InputError):
    """A file could not be used; ``findings`` lists every problem."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("\n".join(str(f) for f in findings))
        self.findings = findings


def load_yaml(path: Path) -> tuple[Any, Lines]:
    """Parse ``path``; returns the data and the 1-based line of every key and list item
    by its path of keys and indexes. Raises :class:`FileProblems` on a syntax error."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise FileProblems([Finding(str(path), line, f"not valid YAML: {exc}")]) from None
    lines: Lines = {}

    def walk(n: Any, where: tuple[Any, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                lines[(*where, key.value)] = key.start_mark.line + 1
                walk(value, (*where, key.value))
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                lines[(*where, index)] = item.start_mark.line + 1
                walk(item, (*where, index))

    if node is not None:
        walk(node, ())
    return data, lines


def line_of(lines: Lines, loc: Sequence[Any]) -> int:
    """The line of the deepest known prefix of ``loc`` (pydantic error locations include
    union member names; they are skipped)."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return 0


def _findings(path: Path, lines: Lines, exc: ValidationError) -> list[Finding]:
    out = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
        where = ".".join(str(p) for p in loc) or "file"
        message = error["msg"].removeprefix("Value error, ")
        out.append(Finding(str(path), line_of(lines, loc), f"{where}: {message}"))
    return out


def default_mapping_files() -> list[Path]:
    """The mapping files shipped with closeloop: each connector's (its row's ``mappings``
    folders, e.g. ``connectors/salesforce/mappings/``)."""
    from closeloop.connectors.catalog import plugins

    folders = [f for p in plugins().values() for f in p.mappings()]
    return [
        Path(str(p))
        for folder in folders
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".yaml")
    ]


def check_mapping_file(path: Path) -> tuple[MappingSpec | None, list[Finding]]:
    """Parse and check one mapping file: its shape, then that every canonical type, target
    field, value map and ownership entry exists. Returns the spec (``None`` if unusable)."""
    try:
        data, lines = load_yaml(path)
    except FileProblems as exc:
        return None, exc.findings
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        return None, _findings(path, lines, exc)
    findings: list[Finding] = []

    def problem(loc: tuple[Any, ...], message: str) -> None:
        findings.append(Finding(str(path), line_of(lines, loc), message))

    for vendor_object, mapping in spec.objects.items():
        base = ("objects", vendor_object)
        try:
            roots = root_models(mapping.canonical)
        except KeyError as exc:
            problem((*base, "canonical"), str(exc.args[0]))
            continue
        _check_rules(spec, roots, mapping.fields, (*base, "fields"), problem)
    for canonical_type, fields in spec.ownership.items():
        try:
            roots = root_models(canonical_type)
        except KeyError as exc:
            problem(("ownership", canonical_type), str(exc.args[0]))
            continue
        for name in fields:
            if name not in roots[0].model_fields:
                problem(
                    ("ownership", canonical_type, name), f"{canonical_type} has no field {name!r}"
                )
    return (spec if not findings else None), findings


def _check_rules(
    spec: MappingSpec,
    roots: list[Any],
    rules: dict[str, FieldRule],
    base: tuple[Any, ...],
    problem: Any,
) -> None:
    for target, rule in rules.items():
        loc = (*base, target)
        try:
            found = resolve(roots, target)
        except KeyError as exc:
            problem(loc, f"{target}: {exc.args[0]}")
            continue
        if isinstance(rule.value_map, str) and rule.value_map not in spec.value_maps:
            known = ", ".join(sorted(spec.value_maps)) or "none"
            problem(loc, f"{target}: no value map named {rule.value_map!r} (defined: {known})")
        if rule.each is not None:
            if not found:
                problem(loc, f"{target}: each needs a list of records, {target} is a plain value")
            else:
                _check_rules(spec, found, rule.each, (*loc, "each"), problem)


def check_settings_file(path: Path) -> tuple[Settings | None, list[Finding]]:
    """Parse and validate a configuration file (the environment applies, as at run time)."""
    from closeloop.config import ConfigError, load_settings

    try:
        _, lines = load_yaml(path)
    except FileProblems as exc:
        return None, exc.findings
    try:
        return load_settings(path), []
    except ConfigError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            return None, _findings(path, lines, cause)
        return None, [Finding(str(path), 0, str(exc))]


def load_mappers(extra_files: Iterable[Path] = ()) -> dict[str, Mapper]:
    """A mapper per connection: the shipped defaults, replaced by files for the same
    connection in ``extra_files``. Raises :class:`FileProblems` listing every problem."""
    mappers: dict[str, Mapper] = {}
    findings: list[Finding] = []
    for path in [*default_mapping_files(), *extra_files]:
        spec, problems = check_mapping_file(Path(path))
        findings.extend(problems)
        if spec is not None:
            mappers[spec.connection] = Mapper(spec)
    if findings:
        raise FileProblems(findings)
    return mappers


def ownership_policy(mappers: dict[str, Mapper]) -> OwnershipPolicy:
    """One field-ownership policy from the ``ownership:`` sections of all mapping files
    (owners are system names, e.g. ``tryton``, or roles, e.g. ``erp``). Raises
    ``ValueError`` when two files name different owners for one field."""
    owners: dict[str, dict[str, str]] = {}
    problems = []
    for connection, mapper in sorted(mappers.items()):
        for canonical_type, fields in mapper.spec.ownership.items():
            for name, owner in fields.items():
                known = owners.setdefault(canonical_type, {}).setdefault(name, owner)
                if known != owner:
                    problems.append(
                        f"{connection}: {canonical_type}.{name} is owned by {owner!r} here and "
                        f"by {known!r} in another mapping"
                    )
    if problems:
        raise ValueError("; ".join(problems))
    return OwnershipPolicy(owners)
