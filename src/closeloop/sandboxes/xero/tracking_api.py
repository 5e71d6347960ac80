"""The ``/TrackingCategories`` routes over an :class:`~.org.Organisation` (see
:mod:`.tracking` for the records and their rules):

- ``GET /TrackingCategories`` (``where``, ``order``, ``includeArchived``): the ``ACTIVE``
  categories with their ``ACTIVE`` options, ordered by ``Name`` unless ``order`` says
  otherwise (Xero documents no order); with ``includeArchived=true`` the ``ARCHIVED``
  categories and options too;
- ``GET /TrackingCategories/{TrackingCategoryID}``: that category, whatever its status,
  with all its options;
- ``PUT /TrackingCategories``: create (``{"Name"}``, or ``{"TrackingCategories": [...]}``);
- ``POST /TrackingCategories/{id}``: rename, or ``Status`` ``ARCHIVED``/``ACTIVE``;
- ``PUT /TrackingCategories/{id}/Options``: create options (``{"Options": [{"Name"}]}``
  or one ``{"Name"}``), answered ``{"Options": [...]}``;
- ``POST /TrackingCategories/{id}/Options/{TrackingOptionID}``: rename, or ``Status``.

Writes are batches as :mod:`.batch` describes (``summarizeErrors`` true by default).
"""

from __future__ import annotations

from typing import Any

from closeloop.sandboxes.xero import batch, tracking
from closeloop.sandboxes.xero.org import Organisation
from closeloop.sandboxes.xero.query import order, where
from closeloop.sandboxes.xero.wire import XeroError, envelope, not_found

_NOT_ALLOWED = XeroError(405, {"Title": "Method Not Allowed", "Status": 405})


def route(
    org: Organisation, method: str, parts: list[str], params: dict[str, str], body: Any
) -> tuple[int, dict[str, Any]]:
    """Answer one call whose path starts ``/TrackingCategories`` (``parts`` are the path's
    segments after it)."""
    now = org.clock()
    category = org.tracking.get(parts[0]) if parts else None
    if parts and category is None:
        raise not_found()
    if len(parts) > 1:
        if parts[1].lower() != "options" or category is None or len(parts) > 3:
            raise not_found()
        answers = _options(org, method, category, parts[2:], params, body)
        return 200, envelope("Options", answers, now)
    if method == "GET":
        if category is not None:
            return 200, envelope("TrackingCategories", [tracking.render_category(category)], now)
        return 200, envelope("TrackingCategories", _listed(org, params), now)
    if (method == "PUT") == (category is not None):
        raise _NOT_ALLOWED
    target = category["TrackingCategoryID"] if category is not None else None
    rows = batch.elements(body, "TrackingCategories", target, "TrackingCategoryID")

    def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return tracking.check_category(org, element, category)

    def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        return tracking.apply_category(org, category, plan)

    answers = batch.write(
        org, rows, batch.summarize(params), check, apply, tracking.render_category, None
    )
    return 200, envelope("TrackingCategories", answers, now)


def _listed(org: Organisation, params: dict[str, str]) -> list[dict[str, Any]]:
    archived = params.get("includeArchived", "false").lower() == "true"
    statuses = ("ACTIVE", "ARCHIVED") if archived else ("ACTIVE",)
    rows = sorted(
        (c for c in org.tracking.values() if c["Status"] in statuses),
        key=lambda c: c["Name"].lower(),
    )
    answers = [tracking.render_category(c, archived) for c in rows]
    if "where" in params:
        keep = where(params["where"])
        answers = [a for a in answers if keep(a)]
    return order(answers, params["order"]) if "order" in params else answers


def _options(
    org: Organisation,
    method: str,
    category: dict[str, Any],
    rest: list[str],
    params: dict[str, str],
    body: Any,
) -> list[dict[str, Any]]:
    option = None
    if rest:
        found = [o for o in category["Options"] if o["TrackingOptionID"] == rest[0]]
        if not found:
            raise not_found()
        option = found[0]
    if method != ("POST" if rest else "PUT"):
        raise _NOT_ALLOWED
    target = option["TrackingOptionID"] if option is not None else None
    rows = batch.elements(body, "Options", target, "TrackingOptionID")

    def check(element: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        return tracking.check_option(category, element, option)

    def apply(element: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
        return tracking.apply_option(org, category, option, plan)

    return batch.write(
        org, rows, batch.summarize(params), check, apply, tracking.render_option, None
    )
