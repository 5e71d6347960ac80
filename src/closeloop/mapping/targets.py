"""Which canonical field paths exist: a mapping may only write fields the model has."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from closeloop.domain.canonical import CANONICAL_TYPES


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field annotation can hold (through Optional, tuples, unions,
    Annotated): the records a dotted path may step into."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def root_models(canonical_type: str) -> list[type[BaseModel]]:
    """``[model]`` of a canonical type. Raises ``KeyError`` naming the known types."""
    try:
        return [CANONICAL_TYPES[canonical_type]]
    except KeyError:
        known = ", ".join(sorted(CANONICAL_TYPES))
        raise KeyError(f"unknown canonical type {canonical_type!r} (known: {known})") from None


def resolve(models: list[type[BaseModel]], target: str) -> list[type[BaseModel]]:
    """The models found at the end of dotted ``target`` from ``models`` (empty for a plain
    value such as a string or a number). Raises ``KeyError`` naming the step that does not
    exist and the fields there are."""
    walked: list[str] = []
    for step in target.split("."):
        holders = [m for m in models if step in m.model_fields]
        if not holders:
            fields = sorted({f for m in models for f in m.model_fields})
            where = ".".join(walked) or "the record"
            raise KeyError(f"{where} has no field {step!r} (fields: {', '.join(fields)})")
        models = [found for m in holders for found in models_in(m.model_fields[step].annotation)]
        walked.append(step)
    return models
