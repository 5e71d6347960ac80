"""What every console page shares: the templates (autoescaped Jinja2, shipped as package
data), who is signed in, and answers for a page that needs a session, a role or a CSRF
token it did not get."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException

from closeloop.api.auth import CSRF_FIELD, Authenticator, Caller
from closeloop.api.sources import ViewSources
from closeloop.domain.access import AccessRole

PREFIX = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Headers of every console page: nothing loads from elsewhere, no framing."""


ConsoleSources = ViewSources
"""What the console reads and acts through (:class:`closeloop.api.sources.ViewSources`,
shared with the API's views)."""


class Refused(Exception):
    """A console request that cannot go on: answered as a page with ``status`` and a
    ``message`` a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Pages:
    """Renders console pages for the signed-in caller."""

    def __init__(self, auth: Authenticator, now: Callable[[], datetime]) -> None:
        self.auth = auth
        self.now = now
        self.env = Environment(
            loader=PackageLoader("closeloop.api.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ago"] = self._ago
        self.env.filters["when"] = _when

    def caller(self, request: Request) -> Caller | None:
        """The signed-in caller, or ``None`` (no valid session or key)."""
        try:
            return self.auth.caller(request)
        except HTTPException:
            return None

    async def acting(self, request: Request, role: AccessRole) -> Caller:
        """The caller of a state-changing form: signed in (else :class:`Refused` 401),
        allowed ``role`` (else 403) and echoing its CSRF token (else 403)."""
        try:
            caller = self.auth.caller(request)
        except HTTPException as exc:
            raise Refused(401, "your session ended: sign in again") from exc
        if not caller.principal.role.allows(role):
            raise Refused(
                403,
                f"{caller.principal.name} is a {caller.principal.role.value}: "
                f"only an {role.value} may do this",
            )
        try:
            await self.auth.check_csrf(request, caller)
        except HTTPException as exc:
            raise Refused(403, str(exc.detail)) from exc
        return caller

    def render(
        self, request: Request, template: str, caller: Caller | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        """``template`` with ``ctx``, the caller, whether it may act (``can_operate``), its
        CSRF token and the ``notice`` of the query string."""
        flash = self.auth.unseal(request.query_params.get("flash", ""))
        page = self.env.get_template(template).render(
            request=request,
            caller=caller,
            can_operate=caller is not None and caller.principal.role.allows(AccessRole.OPERATOR),
            csrf_field=CSRF_FIELD,
            csrf_token=(caller.csrf_token if caller else None) or "",
            notice=flash.get("notice", ""),
            problem=flash.get("problem", ""),
            now=self.now(),
            prefix=PREFIX,
            **ctx,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)

    def refused(self, request: Request, refusal: Refused, caller: Caller | None = None) -> Response:
        """The error page of ``refusal``."""
        return self.render(request, "error.html", caller, refusal.status, message=refusal.message)

    @staticmethod
    def to_sign_in(request: Request) -> RedirectResponse:
        """Send an anonymous visitor to the sign-in page, back here afterwards."""
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/sign-in?next={quote(here, safe='')}", 303)

    def back(self, path: str, **message: str) -> RedirectResponse:
        """A 303 to ``path`` (a console path) showing ``message`` there (``notice`` or
        ``problem``), signed (:meth:`Authenticator.seal`)."""
        query = f"?{urlencode({'flash': self.auth.seal(message)})}" if message else ""
        return RedirectResponse(path + query, 303)

    def _ago(self, at: datetime | None) -> str:
        if at is None:
            return "-"
        return duration((self.now() - at).total_seconds()) + " ago"


def duration(seconds: float) -> str:
    """``seconds`` in words: ``"40 s"``, ``"12 min"``, ``"5 h"``, ``"3 d"``."""
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit}"
    return f"{int(s)} s"


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"
