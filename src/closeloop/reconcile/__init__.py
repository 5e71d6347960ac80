"""Reconciliation: drift detection and repair (later issues)."""
