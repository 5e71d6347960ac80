"""``/api/v1/xref`` and ``/api/v1/invoices``: decisions a person makes about records (the
same record in two systems; a credit note for a posted invoice)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from closeloop.api.auth import Authenticator, Caller
from closeloop.api.v1.models import (
    NO_NUL,
    CreditRequest,
    CreditResult,
    LinkRequest,
    LinkResult,
    MovedInstance,
)
from closeloop.domain.access import AccessRole
from closeloop.engine.operations import Operations

Part = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]


def router(operations: Operations, auth: Authenticator) -> APIRouter:
    """The record routes (operator)."""
    routes = APIRouter(tags=["records"])
    operator = Depends(auth.require(AccessRole.OPERATOR))

    @routes.post("/xref/{canonical_type}/{system}/{external_id}", response_model=LinkResult)
    def link(
        canonical_type: Part,
        system: Part,
        external_id: Part,
        body: LinkRequest,
        caller: Caller = operator,
    ) -> LinkResult:
        """Link a record (``canonical_type`` such as ``account``, its ``system`` and
        ``external_id``) to its partner in another system, as ``closeloop xref link`` does;
        every flow waiting on the link moves in the same transaction. 409 when a waiting
        flow fails on it (nothing is linked then)."""
        moved = operations.link(
            canonical_type,
            (system, external_id),
            (body.target_system, body.target_id),
            caller.principal.actor,
            body.reason,
        )
        return LinkResult(moved=[MovedInstance(flow=f, key=k) for f, k in moved])

    @routes.post("/invoices/{reference:path}/credit", response_model=CreditResult)
    def credit(
        reference: Annotated[str, Path(min_length=1, max_length=300, pattern=NO_NUL)],
        body: CreditRequest,
        caller: Caller = operator,
    ) -> CreditResult:
        """Credit a posted invoice (``reference`` such as ``SF-006.../2026-08``) in full or
        by lines, as ``closeloop credit`` does; the engagement's ERP makes the credit note
        through the outbox. 404 for an invoice the hub did not make, 409 for one not
        posted or a credit note."""
        done = operations.credit(
            reference, body.reason, caller.principal.actor, body.line_keys, body.rebill
        )
        return CreditResult(reference=done["reference"], instance=done["instance"])

    return routes
