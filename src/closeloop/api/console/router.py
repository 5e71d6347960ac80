"""The console's router: sign in and out, the overview and the engagements; the exceptions
(:mod:`.exceptions`), reconciliation and audit pages (:mod:`.records`) and the alerts page
(:mod:`.alerts`) join it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from closeloop.api.auth import Authenticator
from closeloop.api.console.alerts import add_alert_routes
from closeloop.api.console.exceptions import add_exception_routes
from closeloop.api.console.pages import PREFIX, ConsoleSources, Pages, Refused
from closeloop.api.console.records import add_record_routes
from closeloop.domain.access import AccessRole
from closeloop.engine.access import Unauthenticated
from closeloop.flows.timeline import Engagement, engagement_detail, find_engagements

MAX_KEY_CHARS = 500


def console_router(sources: ConsoleSources, auth: Authenticator) -> APIRouter:
    """The console's pages over ``sources``, signed in through ``auth``. Pages need a
    session (anonymous visitors are sent to the sign-in page); forms that change state need
    the operator role and the session's CSRF token (else a 403 page). ``/`` leads to the
    console."""
    router = APIRouter(include_in_schema=False)
    pages = Pages(auth, sources.now)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse(PREFIX, 303)

    @router.get(f"{PREFIX}/sign-in")
    def sign_in_page(request: Request) -> Response:
        return pages.render(request, "sign_in.html", None, next=_next(request))

    @router.post(f"{PREFIX}/sign-in")
    async def sign_in(request: Request) -> Response:
        if not auth.same_origin(request):  # login CSRF: another site signing you in
            refusal = Refused(403, "sign in from the hub's own sign-in page")
            return pages.refused(request, refusal)
        form = await request.form()
        key = form.get("key")
        target = _safe_next(str(form.get("next") or ""))
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
            return pages.render(
                request, "sign_in.html", None, 422, next=target, error="paste your API key"
            )
        response = pages.back(target)
        try:
            auth.sign_in(key.strip(), response, secure=request.url.scheme == "https")
        except Unauthenticated:
            return pages.render(
                request,
                "sign_in.html",
                None,
                401,
                next=target,
                error="that key is not valid: it is unknown, revoked or expired",
            )
        return response

    @router.post(f"{PREFIX}/sign-out")
    async def sign_out(request: Request) -> Response:
        try:
            caller = await pages.acting(request, AccessRole.VIEWER)
        except Refused as refusal:
            return pages.refused(request, refusal)
        response = pages.back(f"{PREFIX}/sign-in", notice="signed out")
        auth.sign_out(caller, response)
        return response

    @router.get(PREFIX)
    def overview_page(request: Request) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        return pages.render(request, "overview.html", caller, view=sources.overview())

    @router.get(f"{PREFIX}/engagements")
    def engagements_page(request: Request, q: str = "") -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        found = find_engagements(sources.read_model, q[:200])
        return pages.render(request, "engagements.html", caller, q=q, engagements=found)

    @router.get(f"{PREFIX}/engagements/{{deal_id}}")
    def engagement_page(request: Request, deal_id: str) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        detail = engagement_detail(sources.read_model, deal_id)
        if detail is None:
            refusal = Refused(404, f"no engagement for deal {deal_id}: search for it instead")
            return pages.refused(request, refusal, caller)
        return pages.render(
            request,
            "engagement.html",
            caller,
            e=detail.engagement,
            stages=detail.stages,
            open_exceptions=detail.open_exceptions,
            records=records_of(detail.engagement),
        )

    add_exception_routes(router, sources, pages)
    add_record_routes(router, sources, pages)
    add_alert_routes(router, sources, pages)
    return router


def records_of(engagement: Engagement) -> list[tuple[str, str, str]]:
    """What the engagement is in each system it was routed to, as Mobilize holds it:
    ``(role, system, words)`` for the ERP customer (its code, the ERP's id, how it was
    found) and the ERP and PSA projects (the project key, each system's id), whatever the
    vendor (a Tryton party, a Xero contact and tracking option, a Harvest project)."""
    data = next((s.data for s in engagement.states if s.flow == "mobilize"), {})
    systems, key = engagement.systems, engagement.status.project_key
    found: list[tuple[str, str, str]] = []
    code, party = data.get("erp_customer_code"), data.get("erp_customer_id")
    if systems.get("erp") and (code or party):
        how = {"tax_id": "matched by tax id", "similar": "matched by name and address"}
        words = f"customer {code or '-'} · id {party or '(not known yet)'}"
        kind = str(data.get("customer_match_kind") or "")
        words += f" · {how.get(kind, 'created by the hub')}" if kind else ""
        found.append(("erp", systems["erp"], words))
    for role in ("erp", "psa"):
        project = data.get(f"{role}_project_id")
        if systems.get(role) and project:
            found.append((role, systems[role], f"project {key} · id {project}"))
    return found


def _next(request: Request) -> str:
    return _safe_next(request.query_params.get("next", ""))


def _safe_next(target: str) -> str:
    """Only a console path (never another site) is a place to go back to."""
    if target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX
