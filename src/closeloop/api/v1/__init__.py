"""``/api/v1``: the operations API, typed and versioned.

Every route needs a credential (:mod:`closeloop.api.auth`): reading takes a ``viewer`` key,
acting on exceptions, records and reconciliation an ``operator`` key, managing keys an
``admin`` key; the audit actor is always the key (``key:<name>``). Answers are the pydantic
models of :mod:`closeloop.api.v1.models`; errors are RFC 9457 problem details
(:mod:`closeloop.api.problems`). Lists page by keyset: ask again with ``before_id`` set to
the answer's ``next`` until it is ``None``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from closeloop.api.auth import Authenticator
from closeloop.api.problems import PROBLEM_RESPONSES
from closeloop.api.v1 import audit, exceptions, keys, records, status
from closeloop.domain.access import AccessRole
from closeloop.engine.operations import Operations

PREFIX = "/api/v1"


def api_v1(operations: Operations, auth: Authenticator) -> APIRouter:
    """The ``/api/v1`` routes over ``operations`` (status, exceptions, records, audit) and
    over ``auth``'s key store (keys); reconciliation
    (:func:`closeloop.api.v1.reconcile.reconcile_router`) and the console's views, overview
    and engagements (:func:`closeloop.api.v1.views.views_router`), have their own routers,
    built where the reconciler and the view sources are."""
    router = APIRouter(
        prefix=PREFIX,
        dependencies=[Depends(auth.require(AccessRole.VIEWER))],
        responses=PROBLEM_RESPONSES,
    )
    router.include_router(status.router(operations))
    router.include_router(exceptions.router(operations, auth))
    router.include_router(records.router(operations, auth))
    router.include_router(audit.router(operations))
    router.include_router(keys.router(auth))
    return router
