"""The roles the flow tests configure: one CRM, PSA and ERP, named as in the demo."""

from __future__ import annotations

from closeloop.domain.routing import Roles, single

ROLES = Roles(
    crm=single("salesforce"),
    psa=single("harvest"),
    erp=single("tryton"),
    key_prefixes={"salesforce": "SF"},
)
