"""A change: one version of one vendor record, as it enters the hub's inbox.

Text the hub cannot store or send is refused here: a string holding a surrogate code point
(JSON's ``"\\udc00"`` parses to one in Python) has no UTF-8 encoding, so every request that
carries it fails, and PostgreSQL's jsonb refuses it; a NUL character (U+0000) cannot be held
by PostgreSQL text or jsonb. :func:`payload_problems` finds both, :func:`scrub_payload` replaces
them for the audit copy of a refused poll record.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

_NAME = r"^[a-z][a-z0-9_]{0,63}$"

INVALID_TEXT = "invalid_text"
"""The pydantic error type of a payload with text the hub cannot store or send; its
``ctx["problems"]`` lists each problem as ``"path: message"``."""

INTAKE_REFUSAL = "refused at intake: "
"""How the inbox error of a poll record refused at intake begins: its stored payload is a
scrubbed audit copy, never to be applied (a replay of it is refused)."""

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_MAX_PER_STRING = 3
_MAX_LISTED = 10
_checks_deferred: ContextVar[bool] = ContextVar("closeloop_text_checks_deferred", default=False)


@dataclass(frozen=True, slots=True)
class TextProblem:
    """One bad character in a payload (or how many more a string holds): ``path`` to the
    string (``customer.notes``, ``lines[2].description``; ``""`` for a bare string) and what
    is wrong.
    Neither holds the bad character itself (a field name shows it escaped, ``na\\udc00me``),
    so the text can be logged, stored and sent as it is."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def payload_problems(payload: Any) -> list[TextProblem]:
    """Every string of ``payload`` (field names and values, in nested dicts and lists) that
    the hub cannot store or send: a surrogate code point (not UTF-8 encodable; a lone one is
    invalid Unicode, and Python keeps even a pair of them as two unencodable code points) or
    a NUL character. Pure, never raises; ``[]`` for good text and for non-text values.

    Returns the problems in document order; each string reports at most three characters
    and then how many more (positions are 1-based, in code points). A payload has a problem
    exactly when ``json.dumps(payload, ensure_ascii=False).encode("utf-8")`` fails or one of
    its strings holds U+0000.
    """
    problems: list[TextProblem] = []
    # an explicit stack, not recursion: a deeply nested payload cannot overflow it
    stack: list[tuple[str, bool, Any]] = [("", False, payload)]
    while stack:
        path, is_key, value = stack.pop()
        if isinstance(value, str):
            problems.extend(TextProblem(path, m) for m in _text_problems(value, is_key))
        elif isinstance(value, dict):
            items: list[tuple[str, bool, Any]] = []
            for key, item in value.items():
                child = _child_path(path, key)
                if isinstance(key, str):
                    items.append((child, True, key))
                items.append((child, False, item))
            stack.extend(reversed(items))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", False, item) for i, item in enumerate(value)]))
    return problems


def scrub_payload(payload: Any) -> Any:
    """A copy of ``payload`` with every character :func:`payload_problems` reports (in field
    names and values) replaced by U+FFFD, the replacement character; other values as they
    are. Only for the audit copy of a refused record: the result is not the vendor's data.
    Never raises (beyond ``RecursionError`` for a payload nested past Python's limit)."""
    if isinstance(payload, str):
        return _BAD_TEXT.sub("\ufffd", payload)
    if isinstance(payload, dict):
        return {scrub_payload(k): scrub_payload(v) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [scrub_payload(v) for v in payload]
    return payload


@contextmanager
def deferred_text_checks() -> Iterator[None]:
    """Inside this block, :class:`Change` accepts a payload whose text :func:`payload_problems`
    reports instead of raising, so that a poll page holding one such record can still be read.
    The caller takes over the check (``Intake.poll`` refuses those records one by one). Only
    the current thread and context are affected (a ``ContextVar``): a connector that builds
    changes in other threads builds them strictly. Everything else about a change is still
    validated."""
    token = _checks_deferred.set(True)
    try:
        yield
    finally:
        _checks_deferred.reset(token)


class Change(BaseModel):
    """One version of one record of one system, as read by a poll or received by a webhook.

    ``(system, object, external_id, version)`` identifies the change: the inbox keeps one row
    per identity, so a repeated delivery is dropped. ``version`` is the vendor's own version
    marker (Salesforce ``SystemModstamp``, Harvest ``updated_at``, a counter); versions of one
    record are ordered by :func:`version_sort_key`.

    Raises ``pydantic.ValidationError`` on a blank identity, a naive datetime, a payload
    that is not a JSON object, or a payload with text the hub cannot store or send (a
    surrogate code point or a NUL, error type :data:`INVALID_TEXT`, one ``ctx["problems"]``
    entry per problem, see :func:`payload_problems`). Webhook deliveries are refused whole on
    that; polls build their changes inside :func:`deferred_text_checks`, where the text check
    is left to the caller, because one bad vendor record must not fail its whole page.
    ``Change.model_construct`` (the inbox's own rows) checks nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = Field(pattern=_NAME, description="the configured system name, e.g. 'crm'")
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
        if _checks_deferred.get():
            return value
        problems = payload_problems(value)
        if problems:
            listed = listed_problems(problems)
            raise PydanticCustomError(
                INVALID_TEXT,
                "payload has text that cannot be stored or sent: {detail}",
                {"detail": "; ".join(listed), "problems": listed},
            )
        return value

    @property
    def key(self) -> tuple[str, str, str]:
        """The record this change is a version of: ``(system, object, external_id)``."""
        return (self.system, self.object, self.external_id)


def version_sort_key(version: str) -> tuple[int, Any]:
    """Order versions of one record: integers numerically, ISO 8601 instants in time, else text.
    An instant may carry a ``#<digest>`` suffix (:func:`stamped_version`): versions of one
    instant rank equal, whatever their digests.

    Returns a tuple that sorts integers before instants before plain text, so comparing two
    versions of different kinds never raises.
    """
    text = version.strip()
    if text.lstrip("-").isdigit():
        return (0, int(text))
    try:
        moment = parse_instant(text.split("#", 1)[0])
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


def stamped_version(modified: datetime, payload: Any) -> str:
    """A record's version from a vendor's modification stamp that has whole seconds only
    (Harvest's ``updated_at``): ``<ISO instant>#<12 hex of the payload's digest>``, so that
    two edits within one second are two versions (the stamp alone would make the second a
    duplicate of the first, and lose it), ranked equal by :func:`version_sort_key`."""
    return f"{modified.isoformat()}#{content_hash(payload)[:12]}"


def content_hash(data: Any) -> str:
    """SHA-256 hex digest of ``data`` as canonical JSON (sorted keys, no spaces)."""
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def listed_problems(problems: Sequence[TextProblem]) -> list[str]:
    """The first ten of ``problems`` as ``"path: message"`` texts, then ``"and N more"`` when
    there are more: short enough for an error response or an exception's message."""
    listed = [str(p) for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        listed.append(f"and {len(problems) - _MAX_LISTED} more")
    return listed


def _text_problems(text: str, is_key: bool) -> list[str]:
    if text.isascii() and "\x00" not in text:  # the common case, without a regex scan
        return []
    found: list[str] = []
    count = 0
    position = 0
    for match in _BAD_TEXT.finditer(text):
        if match.start() < position:  # the low half of a pair already reported
            continue
        count += 1
        position = match.end() + (1 if _is_pair(text, match.start()) else 0)
        if count <= _MAX_PER_STRING:
            found.append(_describe_bad(text, match.start(), is_key))
    if count > _MAX_PER_STRING:
        found.append(
            f"and {count - _MAX_PER_STRING} more such characters"
            + (" in the field name" if is_key else "")
        )
    return found


def _is_pair(text: str, at: int) -> bool:
    return (
        "\ud800" <= text[at] <= "\udbff"
        and at + 1 < len(text)
        and ("\udc00" <= text[at + 1] <= "\udfff")
    )


def _describe_bad(text: str, at: int, is_key: bool) -> str:
    code = ord(text[at])
    where = f"at character {at + 1}" + (" of the field name" if is_key else "")
    if code == 0:
        return f"NUL character U+0000 {where} (PostgreSQL text and jsonb cannot hold it)"
    if _is_pair(text, at):
        low = ord(text[at + 1])
        joined = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        return (
            f"surrogate pair U+{code:04X} U+{low:04X} {where} (invalid Unicode; not UTF-8 "
            f"encodable: should be the one character U+{joined:X})"
        )
    return f"lone surrogate U+{code:04X} {where} (invalid Unicode; not UTF-8 encodable)"


def _child_path(path: str, key: Any) -> str:
    name = key if isinstance(key, str) else str(key)
    name = _BAD_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", name)
    return f"{path}.{name}" if path else name
