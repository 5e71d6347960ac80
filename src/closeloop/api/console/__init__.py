"""The operations console: server-rendered pages under ``/console`` (overview, engagements,
exceptions, reconciliation, audit, alerts), signed in with an API key."""

from closeloop.api.console.pages import ConsoleSources
from closeloop.api.console.router import console_router

__all__ = ["ConsoleSources", "console_router"]
