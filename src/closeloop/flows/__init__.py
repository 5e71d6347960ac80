"""Flows: one module per hand-off, each an explicit persisted state machine."""
