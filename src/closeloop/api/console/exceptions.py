"""The exceptions page: open business exceptions filtered by class, impact, system and age,
grouped by cause, with bulk replay and resolve (a whole group or the selected ones) for
operators."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from closeloop.api.console.pages import PREFIX, ConsoleSources, Pages, Refused
from closeloop.domain.access import AccessRole
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.domain.errors import InputError
from closeloop.engine.operations import BULK_MAX
from closeloop.engine.views import GROUP_SCAN, find_groups
from closeloop.ports.store import ExceptionQuery

PAGE = f"{PREFIX}/exceptions"


def add_exception_routes(router: APIRouter, sources: ConsoleSources, pages: Pages) -> None:
    """``GET /console/exceptions`` (filters: ``error_class``, ``impact``, ``system``,
    ``older_than_h``: hours, a number >= 0) and ``POST /console/exceptions/bulk`` (form:
    ``do``: ``<replay|resolve>:<group|selected>``, ``reason``, ``group`` (a cause's key),
    ``ids`` (the ticked ones, for ``selected``); operator role and CSRF token)."""
    ops = sources.operations

    @router.get(PAGE)
    def exceptions_page(
        request: Request,
        error_class: str = "",
        impact: str = "",
        system: str = "",
        older_than_h: str = "",
    ) -> Response:
        caller = pages.caller(request)
        if caller is None:
            return pages.to_sign_in(request)
        filters = {
            "error_class": error_class,
            "impact": impact,
            "system": system,
            "older_than_h": older_than_h,
        }
        choices = {
            "classes": [c.value for c in ExceptionClass],
            "impacts": [i.value for i in Impact],
            "systems": list(sources.systems),
        }
        try:
            query = _query(sources, error_class, impact, system, older_than_h)
        except Refused as refusal:
            return pages.render(
                request,
                "exceptions.html",
                caller,
                refusal.status,
                groups=[],
                filters=filters,
                error=refusal.message,
                truncated=False,
                choices=choices,
            )
        groups = find_groups(ops, query)
        return pages.render(
            request,
            "exceptions.html",
            caller,
            groups=groups,
            filters=filters,
            error="",
            truncated=sum(g.count for g in groups) >= GROUP_SCAN,
            choices=choices,
        )

    @router.post(f"{PAGE}/bulk")
    async def bulk(request: Request) -> Response:
        try:
            caller = await pages.acting(request, AccessRole.OPERATOR)
        except Refused as refusal:
            return pages.refused(request, refusal, pages.caller(request))
        form = await request.form()
        action, _, scope = str(form.get("do") or "").partition(":")
        reason = str(form.get("reason") or "").strip()[:500]
        try:
            ids = _chosen(sources, scope, form)
            outcomes = ops.bulk(action, ids, caller.principal.actor, reason)
        except (Refused, InputError) as exc:
            return pages.back(PAGE, problem=str(exc))
        done = sum(1 for o in outcomes if o.ok)
        verb = "replayed" if action == "replay" else "resolved"
        notice = f"{verb} {done} of {len(outcomes)} exceptions"
        failed = [f"{o.exception_id}: {o.detail}" for o in outcomes if not o.ok][:5]
        if failed:
            notice += "; not done: " + "; ".join(failed)
        return pages.back(PAGE, notice=notice)


def _query(
    sources: ConsoleSources, error_class: str, impact: str, system: str, older_than_h: str
) -> ExceptionQuery:
    """The open exceptions the filters ask for. Raises :class:`Refused` (422) naming the bad
    filter."""
    try:
        cls = ExceptionClass(error_class) if error_class else None
        imp = Impact(impact) if impact else None
    except ValueError as exc:
        raise Refused(422, f"unknown filter value: {exc}") from None
    if system and system not in sources.systems:
        raise Refused(422, f"no system {system!r}: pick one of {', '.join(sources.systems)}")
    before = None
    if older_than_h.strip():
        try:
            hours = float(older_than_h)
        except ValueError:
            hours = -1.0
        if not 0 <= hours <= 24 * 3650:
            raise Refused(422, "age: give a number of hours, 0 or more (e.g. 24)")
        before = sources.now() - timedelta(hours=hours)
    return ExceptionQuery(
        error_class=cls, impact=imp, system=system or None, created_before=before, limit=GROUP_SCAN
    )


def _chosen(sources: ConsoleSources, scope: str, form: FormData) -> list[int]:
    """The exception ids a bulk form names: the open exceptions of the cause ``group`` the
    page showed (under the page's filters, none newer than its newest, ``upto``), or the
    ``ids`` ticked. Raises :class:`Refused` when there are none or they are not ids."""
    ids = [str(i) for i in form.getlist("ids")]
    if scope == "group":
        shown = {
            name: str(form.get(name) or "")
            for name in ("error_class", "impact", "system", "older_than_h")
        }
        upto = str(form.get("upto") or "")
        if not upto.isdigit() or len(upto) > 18:
            raise Refused(422, "reload the page: the form does not say which exceptions it showed")
        query = _query(sources, **shown)
        group = str(form.get("group") or "")
        found = next((g for g in find_groups(sources.operations, query) if g.key == group), None)
        chosen = [i for i in (found.ids if found else []) if i <= int(upto)]
        if not chosen:
            raise Refused(409, "that group has no open exceptions any more: nothing was done")
        return chosen
    if scope != "selected":
        raise Refused(422, "choose the whole group or the selected exceptions")
    if not ids:
        raise Refused(422, "tick the exceptions to act on first")
    if len(ids) > BULK_MAX or not all(i.isdigit() and len(i) < 12 for i in ids):
        raise Refused(422, f"exception ids are numbers, at most {BULK_MAX} at once")
    return [int(i) for i in ids]
