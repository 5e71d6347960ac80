"""``/api/v1/exceptions``: business exceptions found, grouped by cause, shown, replayed and
resolved, one at a time or in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from closeloop.api.auth import Authenticator, Caller
from closeloop.api.v1.models import (
    MAX_ID,
    NO_NUL,
    BulkOutcome,
    BulkRequest,
    BulkResult,
    ExceptionItem,
    ExceptionPage,
    ReplayRequest,
    ResolveRequest,
)
from closeloop.api.v1.view_models import ExceptionGroup, ExceptionGroups
from closeloop.domain.access import AccessRole
from closeloop.domain.commands import ExceptionClass, Impact
from closeloop.engine.operations import Operations
from closeloop.engine.views import GROUP_SCAN, find_groups
from closeloop.ports.store import ExceptionQuery, ExceptionRow

MAX_AGE_H = 24 * 365 * 100
"""The largest ``older_than_h`` taken: a century."""

ExceptionId = Annotated[int, Path(ge=1, le=MAX_ID, description="the exception's id")]


def items(operations: Operations, rows: Sequence[ExceptionRow]) -> list[ExceptionItem]:
    """``rows`` as the API shows them, each with the system it concerns."""
    systems = operations.exception_systems([r.id for r in rows])
    return [ExceptionItem(**asdict(r), system=systems.get(r.id)) for r in rows]


@dataclass(frozen=True)
class Filters:
    """The exception filters of ``GET /exceptions`` and ``GET /exceptions/groups``: the
    ``class`` and ``impact``, the ``system`` concerned and the age (opened over
    ``older_than_h`` hours ago); each absent one lets every exception through."""

    error_class: Annotated[ExceptionClass | None, Query(alias="class")] = None
    impact: Impact | None = None
    system: Annotated[
        str | None,
        Query(min_length=1, max_length=100, pattern=NO_NUL, description="target system"),
    ] = None
    older_than_h: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_H, allow_inf_nan=False, description="opened over N hours ago"),
    ] = None

    def query(self, now: datetime, **more: Any) -> ExceptionQuery:
        """The store query of these filters at ``now`` (aware), with ``more`` of
        :class:`~closeloop.ports.store.ExceptionQuery`'s fields (default: open only)."""
        before = now - timedelta(hours=self.older_than_h) if self.older_than_h else None
        return ExceptionQuery(
            error_class=self.error_class,
            impact=self.impact,
            system=self.system,
            created_before=before,
            **more,
        )


def router(operations: Operations, auth: Authenticator) -> APIRouter:
    """The exception routes: reading (viewer), replay, resolve and bulk (operator)."""
    routes = APIRouter(prefix="/exceptions", tags=["exceptions"])
    operator = Depends(auth.require(AccessRole.OPERATOR))

    @routes.get("", response_model=ExceptionPage)
    def find(
        filters: Annotated[Filters, Depends()],
        status: Annotated[
            Literal["open", "replayed", "resolved", "any"], Query(description="any: all")
        ] = "open",
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                pattern=NO_NUL,
                description="text in the entity or message (case-insensitive)",
            ),
        ] = None,
        before_id: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="the previous page's next")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ExceptionPage:
        """Business exceptions matching every filter given, newest first, a page at a time."""
        query = filters.query(
            operations.clock.now(),
            status=None if status == "any" else status,
            search=q,
            before_id=before_id,
            limit=limit + 1,  # one more tells whether a next page exists
        )
        rows = operations.find_exceptions(query)
        page = items(operations, rows[:limit])
        return ExceptionPage(items=page, next=page[-1].id if len(rows) > limit else None)

    @routes.get("/groups", response_model=ExceptionGroups)
    def groups(filters: Annotated[Filters, Depends()]) -> ExceptionGroups:
        """Open business exceptions matching every filter given, grouped by cause (the same
        class, system and message but for ids, amounts and dates), largest group first:
        one replay or resolve of a group's ``exception_ids`` through ``/exceptions/bulk``
        acts on the cause. At most 10,000 are read (``truncated`` says more may match)."""
        query = filters.query(operations.clock.now(), limit=GROUP_SCAN)
        found = find_groups(operations, query)
        examples = items(operations, [g.example for g in found])
        return ExceptionGroups(
            groups=[
                ExceptionGroup(
                    key=g.key,
                    error_class=ExceptionClass(g.error_class),
                    system=g.system,
                    cause=g.cause,
                    count=g.count,
                    oldest=g.oldest,
                    example=example,
                    impacts=[Impact(i) for i in g.impacts],
                    entities=g.entities,
                    exception_ids=g.ids,
                )
                for g, example in zip(found, examples, strict=True)
            ],
            truncated=sum(g.count for g in found) >= GROUP_SCAN,
        )

    # declared after /groups: a path segment that is not a number is no exception id
    @routes.get("/{exception_id}", response_model=ExceptionItem)
    def show(exception_id: ExceptionId) -> ExceptionItem:
        """One business exception (404 when there is none)."""
        return items(operations, [operations.show(exception_id)])[0]

    @routes.post("/{exception_id}/replay", response_model=ExceptionItem)
    def replay(
        exception_id: ExceptionId, body: ReplayRequest | None = None, caller: Caller = operator
    ) -> ExceptionItem:
        """Run the exception's parked command (or re-apply its rejected change) again, with
        its idempotency key: a replay never duplicates an effect. 409 when the exception is
        not open or has nothing to replay."""
        reason = body.reason if body is not None else ""
        row = operations.replay(exception_id, caller.principal.actor, reason)
        return items(operations, [row])[0]

    @routes.post("/{exception_id}/resolve", response_model=ExceptionItem)
    def resolve(
        exception_id: ExceptionId, body: ResolveRequest, caller: Caller = operator
    ) -> ExceptionItem:
        """Close the exception by hand with a reason; its parked command is skipped. 409
        when it is not open, 422 for a blank reason."""
        row = operations.resolve(exception_id, caller.principal.actor, body.reason)
        return items(operations, [row])[0]

    @routes.post("/bulk", response_model=BulkResult)
    def bulk(body: BulkRequest, caller: Caller = operator) -> BulkResult:
        """Replay or resolve many exceptions, each in its own transaction: one that cannot be
        acted on (unknown, not open, nothing to replay) fails alone and says why."""
        done = operations.bulk(body.action, body.ids, caller.principal.actor, body.reason)
        return BulkResult(
            outcomes=[BulkOutcome(id=o.exception_id, ok=o.ok, detail=o.detail) for o in done]
        )

    return routes
