"""Master data: cross-reference, matching, survivorship, field ownership (issue 3 onwards)."""
