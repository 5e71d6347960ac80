"""The demo firm's legal entities, exchange rates and routing: what turns the ``closeloop.yaml``
that ``sandbox up`` writes (one Tryton, one company; a Xero) into the configuration of a firm
that sells through a German GmbH, a UK Ltd and a US Inc from one Tryton database, and through
the UK unit it acquired (``GB-ACQ``), which keeps its own Xero.

- ``legal_entities``: the three companies the sandbox's Tryton was set up with (the Tryton
  sandbox's entities; the GmbH may also invoice in CHF, USD and GBP) and the acquired unit
  (:data:`ACQUIRED_ENTITY`, GBP only);
- one Tryton system per group entity (``tryton``, ``tryton_gb``, ``tryton_us``: one database,
  each acting in its entity's company), the acquired unit's ``xero``, and ``roles.erp`` rules
  routing each deal by its ``legal_entity``;
- ``exchange_rates``: a rates file of monthly EUR reference rates for CHF and USD (made-up
  figures of the right size, labelled as such; no GBP, so the GmbH's one deal in GBP shows
  what a missing rate does);
- a Salesforce mapping whose ``legal_entity`` falls back to the account's country when the
  opportunity names none (UK clients: the Ltd; US clients: the Inc; the others: the GmbH).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from closeloop.connectors.tryton.sandbox import SANDBOX_ENTITIES
from closeloop.devtools.demo.firm import ACQUIRED
from closeloop.domain.entities import LegalEntity
from closeloop.ports.clock import SystemClock

ERP_OF_ENTITY = {"DE-GMBH": "tryton", "GB-LTD": "tryton_gb", "US-INC": "tryton_us"}
"""The Tryton system (one per company of the one database) serving each group entity."""
ACQUIRED_ERP = "xero"
"""The acquired unit's ERP: the Xero sandbox's system."""
ACQUIRED_ENTITY = LegalEntity(
    code=ACQUIRED,
    name="Harrowgate Consulting Ltd",
    country="GB",
    currency="GBP",
    vat_registered=True,
    standard_rate=Decimal("0.20"),
    invoice_currencies=("GBP",),
)
"""The UK consultancy the group acquired: VAT-registered, invoicing in GBP from its Xero."""
INVOICE_CURRENCIES = {"DE-GMBH": ("EUR", "CHF", "USD", "GBP"), "GB-LTD": ("GBP",)}
"""What each entity may invoice in beyond its own currency."""
RATES_PER_EUR = {"CHF": Decimal("0.9350"), "USD": Decimal("1.0850")}
"""The demo's rates (units per EUR) in the first month; they drift a little each month."""
RATES_SOURCE = "closeloop demo: illustrative rates, not published market data"
ENTITY_BY_COUNTRY = {"United Kingdom": "GB-LTD", "United States": "US-INC"}
"""The mapping's default entity by the account's billing country (else the GmbH)."""


def legal_entities() -> dict[str, dict[str, Any]]:
    """``legal_entities:`` of the demo: the Tryton sandbox's companies and the acquired
    unit."""
    out = {}
    for entity in (*SANDBOX_ENTITIES, ACQUIRED_ENTITY):
        data = entity.model_dump(mode="json", exclude={"code"})
        data["invoice_currencies"] = list(INVOICE_CURRENCIES.get(entity.code, ()))
        out[entity.code] = data
    return out


def write_rates(path: Path, start: date, until: date) -> Path:
    """A rates CSV (``date,currency,rate,source``) with a rate of each of
    :data:`RATES_PER_EUR` on the first of every month from ``start``'s to ``until``'s."""
    rows = ["date,currency,rate,source"]
    month, step = start.replace(day=1), 0
    while month <= until:
        for currency, rate in RATES_PER_EUR.items():
            drift = (rate * Decimal(step) / Decimal(400)).quantize(Decimal("0.0001"))
            rows.append(f"{month.isoformat()},{currency},{rate + drift},{RATES_SOURCE}")
        month = (month + timedelta(days=32)).replace(day=1)
        step += 1
    path.write_text("\n".join(rows) + "\n")
    return path


def salesforce_mapping(home: Path) -> Path:
    """The shipped Salesforce mapping with ``legal_entity`` defaulting by account country."""
    shipped = resources.files("closeloop.connectors.salesforce") / "mappings" / "salesforce.yaml"
    spec: dict[str, Any] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    spec["objects"]["Opportunity"]["fields"]["legal_entity"] = {
        "path": "Legal_Entity__c",
        "otherwise": {
            "path": "Account.BillingCountry",
            "value_map": ENTITY_BY_COUNTRY,
            "default": "DE-GMBH",
        },
    }
    path = home / "salesforce-mapping.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def entity_overlay(
    tryton: dict[str, Any], home: Path, start: date, until: date, *, acquired: bool = True
) -> dict[str, Any]:
    """What the firm of three entities adds to the sandboxes' ``closeloop.yaml`` (see the
    module docstring), for the sandbox state's ``config`` (:func:`closeloop.devtools.
    sandboxctl.hub_config` lays it over the generated file): ``tryton``: the settings of the
    sandbox's Tryton system; the rates file (``start`` to ``until``) and the mapping are
    written into ``home``. With ``acquired`` (a Xero sandbox runs), the acquired unit's
    deals go to the ``xero`` system, the sandbox's as ``sandbox up`` configured it; without,
    its entity is configured but no system serves it (its deals are blocked as unrouted)."""
    rates = write_rates(home / "rates.csv", start, until)
    erps = {**ERP_OF_ENTITY, **({ACQUIRED: ACQUIRED_ERP} if acquired else {})}
    return {
        "systems": {name: {**tryton, "company": code} for code, name in ERP_OF_ENTITY.items()},
        "legal_entities": legal_entities(),
        "exchange_rates": {"base": "EUR", "file": str(rates.resolve())},
        "roles": {
            "erp": {
                "systems": list(erps.values()),
                "rules": [
                    {"field": "legal_entity", "values": [code], "system": name}
                    for code, name in erps.items()
                ],
            }
        },
        "mappings": [str(salesforce_mapping(home).resolve())],
    }


class ShiftedClock(SystemClock):
    """The machine's clock, ``shift`` ahead (the demo ages its receivables: a hub running
    weeks later sees invoices fall overdue)."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def now(self) -> datetime:
        """The machine's time plus ``shift``."""
        return super().now() + self.shift
