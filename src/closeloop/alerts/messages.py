"""The words of notifications: one condition's alert, the daily digest, the channel test."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from closeloop.alerts.channels import Notification
from closeloop.ports.alerts import AlertState


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "never"


def as_fields(state: AlertState) -> dict[str, Any]:
    """``state`` as the structured fields of a notification."""
    return {
        "key": state.key,
        "rule": state.rule,
        "summary": state.summary,
        "detail": state.detail,
        "firing": state.firing,
        "since": state.since.isoformat(),
    }


def alert(state: AlertState, at: datetime, again: bool) -> Notification:
    """The notification of one firing condition (``again``: a re-notification)."""
    title = ("still firing: " if again else "") + state.summary
    text = (
        f"closeloop alert [{state.key}]: {state.summary}\n"
        f"firing since {_when(state.since)}; you hear about it once until it clears or "
        "the re-notify interval passes."
    )
    return Notification("alert", title, text, at, [as_fields(state)])


def digest(
    firing: Sequence[AlertState], cleared: Sequence[AlertState], at: datetime
) -> Notification:
    """The daily digest: what is firing (with when each was last notified) and what cleared
    since the previous digest."""
    title = f"daily digest: {len(firing)} condition(s) firing"
    lines = [f"closeloop daily digest, {_when(at)}: {len(firing)} condition(s) firing."]
    for s in firing:
        lines.append(
            f"- [{s.key}] {s.summary} (since {_when(s.since)}, last sent {_when(s.sent_at)})"
        )
    if not firing:
        lines.append("Nothing is firing.")
    if cleared:
        lines.append(f"Cleared since the last digest: {', '.join(s.key for s in cleared)}.")
    return Notification("digest", title, "\n".join(lines), at, [as_fields(s) for s in firing])


def test_note(channel: str, at: datetime) -> Notification:
    """The test notification ``closeloop alerts test`` sends to ``channel``."""
    return Notification(
        "test",
        f"test notification to {channel}",
        f"closeloop test notification to the channel {channel!r}: alerts reach you here.",
        at,
    )
