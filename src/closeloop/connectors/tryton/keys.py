"""The keys closeloop makes visible in Tryton, so that a write is found again (why these:
:mod:`.operations`)."""

WORK_KEY = "closeloop:{key}"
"""A project's, task's or milestone's ``comment`` line: ``closeloop:<key>``."""

LINE_MARK = "[cl:{key}]"
"""The marker at the end of a timesheet line's ``description``: ``[cl:<key>]``."""

CHARGE_NOTE = "closeloop:{key}"
"""A charge's invoice line ``note`` (the whole note): ``closeloop:<charge key>``. Tryton
lets a note be written on a posted invoice too, keeps it off the printed invoice and finds
it by exact match; the credit note's lines get the same note (:mod:`.credits`)."""


def milestone_work_key(project_key: str, milestone_key: str) -> str:
    """The key of a fixed-fee project's milestone work: ``<project key>:milestone:<key>``
    (beside its role tasks, ``<project key>:<role>``)."""
    return f"{project_key}:milestone:{milestone_key}"


def milestone_charge_key(milestone_key: str) -> str:
    """The key of the charge that bills a milestone: ``milestone:<key>`` (the form
    :class:`~closeloop.domain.operations.ChargeLine` documents)."""
    return f"milestone:{milestone_key}"


def charge_key_of(note: str | None) -> str | None:
    """The charge key in an invoice line's ``note`` (``None`` for a line without one)."""
    prefix = CHARGE_NOTE.format(key="")
    if note and note.startswith(prefix) and "\n" not in note:
        return note[len(prefix) :]
    return None
