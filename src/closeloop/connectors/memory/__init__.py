"""Connector to a memory sandbox over HTTP (the engine's reference connector)."""
