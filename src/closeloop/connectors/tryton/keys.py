"""The keys closeloop makes visible in Tryton, so that a write is found again (why these:
:mod:`.operations`)."""

WORK_KEY = "closeloop:{key}"
"""A project's or task's ``comment`` line: ``closeloop:<key>``."""

LINE_MARK = "[cl:{key}]"
"""The marker at the end of a timesheet line's ``description``: ``[cl:<key>]``."""
