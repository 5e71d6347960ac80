"""Canonical types, commands, outcomes and rules. Pure Python and pydantic: no I/O."""
