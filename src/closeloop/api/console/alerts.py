"""The alerts page: configured channels and rules, what fires now and when it was last sent
(viewer role and up)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from closeloop.api.console.pages import PREFIX, ConsoleSources, Pages, Refused

ALERTS = f"{PREFIX}/alerts"


def add_alert_routes(router: APIRouter, sources: ConsoleSources, pages: Pages) -> None:
    """``GET /console/alerts``: 404 page when the hub shows no alerts."""

    @router.get(ALERTS)
    def alerts_page(request: Request) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        if sources.alerts is None:
            return pages.refused(request, Refused(404, "this hub shows no alerts"), caller)
        return pages.render(request, "alerts.html", caller, alerts=sources.alerts())
