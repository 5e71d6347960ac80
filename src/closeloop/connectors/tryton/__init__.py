"""Tryton ERP connector: JSON-RPC client, setup, operations, change feed (over HTTP only)."""
