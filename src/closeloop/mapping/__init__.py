"""Declarative mappings: vendor records onto canonical records, configured in YAML, no code."""
