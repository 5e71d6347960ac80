"""Protocols the core depends on: connectors, the store, flows and the clock."""
