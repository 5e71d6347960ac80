"""Who is calling: API keys (``Authorization: Bearer clk_...``) and console sessions.

A console session is a cookie signed with the hub's session secret (itsdangerous, HMAC)
holding the key's id, a CSRF token and its issue time; it lasts ``session_ttl_s`` and ends
at once when its key is revoked or expires, since every request looks the key up. The
cookie is ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` when the request came over TLS
(directly or, with uvicorn's ``--proxy-headers``, through a proxy that says so). A request
authenticated by the cookie must also carry the CSRF token for any method that changes
state: the ``X-CSRF-Token`` header or a ``csrf_token`` form field (OWASP's synchronizer
token pattern). A request authenticated by a key needs none: a browser never adds an
``Authorization`` header by itself.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.exceptions import HTTPException

from closeloop.domain.access import AccessRole, Principal
from closeloop.engine.access import Access, Unauthenticated

log = structlog.get_logger(__name__)
SESSION_COOKIE = "closeloop_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="closeloop"'}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: its principal, and for a console session its CSRF token
    (``None`` when the request came with an API key)."""

    principal: Principal
    csrf_token: str | None = None

    @property
    def via_session(self) -> bool:
        """Whether a session cookie (not a key) authenticated the request."""
        return self.csrf_token is not None


class Authenticator:
    """Checks credentials for every route that needs one, and signs console sessions in."""

    def __init__(self, access: Access, session_secret: str | None, session_ttl_s: float):
        self.access = access
        self.session_ttl_s = session_ttl_s
        secret = session_secret or secrets.token_urlsafe(32)  # none set: this process only
        self._sessions = URLSafeTimedSerializer(secret, salt="closeloop-session")
        self._flash = URLSafeTimedSerializer(secret, salt="closeloop-flash")

    def caller(self, request: Request) -> Caller:
        """The caller of ``request``. Raises ``HTTPException(401)`` (with a
        ``WWW-Authenticate`` challenge) when no valid key or session comes with it."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if header:
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("Authorization is not 'Bearer <key>'")
                return Caller(self.access.authenticate(token))
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                return self._session(cookie)
        except Unauthenticated as exc:
            log.info("http_unauthenticated", path=request.url.path, reason=str(exc))
            raise HTTPException(
                401, "the API key or session is not valid (unknown, revoked or expired)", _CHALLENGE
            ) from None
        raise HTTPException(401, "sign in: send 'Authorization: Bearer <API key>'", _CHALLENGE)

    def _session(self, cookie: str) -> Caller:
        try:
            data = self._sessions.loads(cookie, max_age=int(self.session_ttl_s))
        except BadSignature:
            raise Unauthenticated("session cookie invalid or expired") from None
        if not isinstance(data, dict) or not isinstance(data.get("k"), int):
            raise Unauthenticated("session cookie malformed")
        at = data.get("t")
        signed_in_at = datetime.fromtimestamp(at, UTC) if isinstance(at, float) else None
        if signed_in_at is None:
            raise Unauthenticated("session cookie malformed")
        principal = self.access.principal(data["k"], signed_in_at=signed_in_at)
        return Caller(principal, str(data.get("c") or ""))

    def sign_in(self, token: str, response: Response, secure: bool) -> Caller:
        """Check ``token`` and set the session cookie on ``response``. Raises
        :class:`~closeloop.engine.access.Unauthenticated` for a bad key."""
        principal = self.access.authenticate(token)
        csrf = secrets.token_urlsafe(24)
        at = self.access.clock.now().timestamp()
        cookie = self._sessions.dumps({"k": principal.key_id, "c": csrf, "t": at})
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(self.session_ttl_s),
            httponly=True,
            secure=secure,
            samesite="strict",
            path="/",
        )
        return Caller(principal, csrf)

    def sign_out(self, caller: Caller, response: Response) -> None:
        """End every console session of the caller's key (a stolen copy of the cookie
        included) and remove the cookie."""
        self.access.end_sessions(caller.principal.key_id, caller.principal.actor)
        response.delete_cookie(SESSION_COOKIE, path="/")

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Whether a browser says ``request`` came from a page of this hub: its
        ``Sec-Fetch-Site`` (Fetch Metadata) is ``same-origin`` or ``none`` (typed by the
        user), or without it its ``Origin`` is the hub's own; a request that says neither
        (not a browser's) counts as same-origin. Guards the sign-in form against login
        CSRF (OWASP CSRF Prevention Cheat Sheet)."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = request.headers.get("origin")
        if origin is None:
            return True
        return origin == f"{request.url.scheme}://{request.url.netloc}"

    def seal(self, message: dict[str, str]) -> str:
        """``message`` signed for a redirect's query string (a console notice), so that a
        link from elsewhere cannot put its own words on the hub's pages."""
        return self._flash.dumps(message)

    def unseal(self, sealed: str) -> dict[str, str]:
        """The message :meth:`seal` made, if signed here in the last 10 minutes; else
        empty."""
        try:
            data = self._flash.loads(sealed, max_age=600)
        except BadSignature:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    async def check_csrf(self, request: Request, caller: Caller) -> None:
        """Refuse (403) a state-changing request of a session without its CSRF token."""
        if request.method in SAFE_METHODS or not caller.via_session:
            return
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            field = (await request.form()).get(CSRF_FIELD)
            sent = field if isinstance(field, str) else None
        if not sent or not hmac.compare_digest(sent, caller.csrf_token or ""):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")

    def require(self, role: AccessRole) -> Callable[[Request], Awaitable[Caller]]:
        """A FastAPI dependency: the caller, if authenticated (else 401), allowed ``role``
        (else 403) and, for a session's state-changing request, with its CSRF token."""

        async def dependency(request: Request) -> Caller:
            known = getattr(request.state, "caller", None)  # a router's check came first
            caller = known if isinstance(known, Caller) else self.caller(request)
            if not caller.principal.role.allows(role):
                raise HTTPException(
                    403,
                    f"key {caller.principal.name!r} has role {caller.principal.role.value}; "
                    f"this needs {role.value}",
                )
            await self.check_csrf(request, caller)
            request.state.caller = caller
            return caller

        return dependency
