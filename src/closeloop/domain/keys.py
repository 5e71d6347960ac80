"""Business keys the hub makes visible in other systems, built in one place.

An engagement's project key is ``<prefix>-<deal id>``: ``prefix`` is the configured key
prefix of the CRM the deal came from (its ``key_prefix`` setting, by default its connector's,
e.g. ``SF`` for a Salesforce org, giving ``SF-006...``). The PSA shows it as the project code,
the ERP as the project's key, and invoices reference ``<project key>/<period>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

_SEPARATOR = "-"


def engagement_code(prefix: str, deal_id: str) -> str:
    """The project key of the deal ``deal_id`` of a CRM whose key prefix is ``prefix``.

    Raises ``ValueError`` for an empty prefix or deal id, or a prefix holding the separator.
    """
    if not prefix or _SEPARATOR in prefix or not deal_id:
        raise ValueError(f"cannot make an engagement key of {prefix!r} and {deal_id!r}")
    return f"{prefix}{_SEPARATOR}{deal_id}"


def split_engagement_code(code: str) -> tuple[str, str] | None:
    """``(prefix, deal id)`` of a project key made by :func:`engagement_code` (``None``
    when ``code`` has not that form)."""
    prefix, separator, deal_id = code.partition(_SEPARATOR)
    return (prefix, deal_id) if separator and prefix and deal_id else None


def deal_of(code: str, prefixes: Iterable[str]) -> str | None:
    """The deal id in the project key ``code`` when it starts with one of ``prefixes``
    (``None`` for a project the hub did not make)."""
    parts = split_engagement_code(code)
    if parts is None or parts[0] not in set(prefixes):
        return None
    return parts[1]


def task_key(project_key: str, task_name: str) -> str:
    """The key of a project's task, as an :class:`~closeloop.domain.operations.UpsertProject`
    sets it up and a timesheet line names it: ``<project key>:<task name>``."""
    return f"{project_key}:{task_name}"


_RATE_TASK = re.compile(r"^(?P<role>.+) \(from (?P<day>\d{4}-\d{2}-\d{2})\)$")


def rate_task(role: str, effective: date) -> str:
    """The name of the task a change order's new rate of ``role`` is recorded on from
    ``effective``: ``<role> (from <ISO date>)`` (time before keeps the old task's rate)."""
    return f"{role} (from {effective.isoformat()})"


def role_of(task: str) -> tuple[str, date | None]:
    """The role a task name stands for and the day its rate applies from: a rate-change
    task (:func:`rate_task`) gives ``(role, date)``, any other ``(name, None)``."""
    match = _RATE_TASK.match(task)
    if match is None:
        return task, None
    try:
        return match["role"], date.fromisoformat(match["day"])
    except ValueError:
        return task, None
