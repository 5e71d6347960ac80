"""Connectors: one package per system (client, mapping, adapter, changes)."""
