"""A change: one version of one vendor record, as it enters the hub's inbox."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class Change(BaseModel):
    """One version of one record of one system, as read by a poll or received by a webhook.

    ``(system, object, external_id, version)`` identifies the change: the inbox keeps one row
    per identity, so a repeated delivery is dropped. ``version`` is the vendor's own version
    marker (Salesforce ``SystemModstamp``, Harvest ``updated_at``, a counter); versions of one
    record are ordered by :func:`version_sort_key`.

    Raises ``pydantic.ValidationError`` on a blank identity, a naive datetime or a payload
    that is not a JSON object.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(pattern=_NAME, description="system name, e.g. 'salesforce'")
    object: str = Field(min_length=1, max_length=80, description="vendor object, e.g. 'Account'")
    external_id: str = Field(min_length=1, max_length=255)
    version: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any]
    correlation_id: str | None = Field(default=None, max_length=64)
    modified_at: datetime | None = Field(default=None, description="vendor's modification time")

    @field_validator("modified_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("modified_at must be timezone-aware")
        return value

    @field_validator("payload")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"payload is not plain JSON: {exc}") from exc
        return value

    @property
    def key(self) -> tuple[str, str, str]:
        """The record this change is a version of: ``(system, object, external_id)``."""
        return (self.system, self.object, self.external_id)


def version_sort_key(version: str) -> tuple[int, Any]:
    """Order versions of one record: integers numerically, ISO 8601 instants in time, else text.

    Returns a tuple that sorts integers before instants before plain text, so comparing two
    versions of different kinds never raises.
    """
    text = version.strip()
    if text.lstrip("-").isdigit():
        return (0, int(text))
    try:
        moment = parse_instant(text)
    except ValueError:
        return (2, text)
    return (1, moment.timestamp())


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its UTC offset as an aware datetime; also vendors' forms
    ``...Z`` and ``...+0000`` (Salesforce's ``2024-05-01T09:30:00.000+0000``). Raises
    ``ValueError`` for anything else, including a time without an offset."""
    text = text.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


def content_hash(data: Any) -> str:
    """SHA-256 hex digest of ``data`` as canonical JSON (sorted keys, no spaces)."""
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()
