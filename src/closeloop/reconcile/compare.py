"""Comparing the systems' facts, domain by domain: customers and projects here, time and
invoices in :mod:`.compare_billing`.

Pure: facts in (:mod:`closeloop.ports.reconcile`), the hub's own view
(:class:`~.view.HubView`) beside them, findings out. A finding names the field, each
system's value, the role that owns the field (the ownership policy of the mapping files,
else :data:`OWNERS`) and the systems whose value is not the owner's; explaining it (who
changed what when, whether it is still in flight) is :mod:`.explain`'s.

Records are paired through the keys the hub made visible in every system (project keys,
time entry markers, invoice references) and, for customers, through the cross-reference
the engagements were linked by (the CRM account and the ERP customer code). Only records
that concern the hub's engagements are compared; a record of the hub's form that no
engagement knows is an orphan when its deal is one of the CRM's (a database shared with
other firms' tests or companies is not ours to judge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as default
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from closeloop.mdm.ownership import OwnershipPolicy
from closeloop.ports.reconcile import CUSTOMERS, PROJECTS, Fact
from closeloop.reconcile.view import Engagement, HubView

MISMATCH = "mismatch"
MISSING = "missing"
ORPHAN = "orphan"
DANGLING = "dangling"

OWNERS: dict[str, dict[str, str]] = {
    CUSTOMERS: {
        "legal_name": "erp",
        "tax_ids": "erp",
        "country": "erp",
        "street": "erp",
        "city": "erp",
        "postal_code": "erp",
        "payment_terms_days": "erp",
        "currency": "crm",
    },
    PROJECTS: {"status": "erp", "rates": "crm", "fee": "crm", "billing_method": "crm"},
    "time": {"*": "psa", "billed": "erp"},
    "invoices": {"*": "erp"},
}
"""The role owning each domain's fields when the ownership policy does not name one: the
ERP keeps the customer master and closes projects for billing; the deal (CRM) sets the rate
card and the fee; the PSA records the hours; the ERP's invoices are the truth of what was
billed and paid."""

_CANONICAL = {CUSTOMERS: "account"}
_POLICY_FIELD = {
    "country": "billing_address",
    "street": "billing_address",
    "city": "billing_address",
    "postal_code": "billing_address",
}

Facts = Mapping[str, Mapping[str, Mapping[str, Fact]]]
"""``facts[domain][system][key]``."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement before it is explained: ``values`` by system (JSON-ready),
    ``owner``: the system of record (``None``: no clear owner), ``stale``: the systems whose
    value is not the owner's, ``facts`` by system, the ``engagement`` it belongs to."""

    domain: str
    kind: str
    key: str
    field: str | None
    values: dict[str, Any]
    owner: str | None
    stale: tuple[str, ...]
    facts: dict[str, Fact] = default(default_factory=dict)
    engagement: Engagement | None = None


@dataclass(frozen=True)
class Owners:
    """Who owns a field: the mapping files' policy (owners named by system or role), then
    :data:`OWNERS`; ``role_of``: each configured system's role."""

    policy: OwnershipPolicy = default(default_factory=OwnershipPolicy)
    role_of: Mapping[str, str] = default(default_factory=dict)

    def role(self, domain: str, field_name: str) -> str | None:
        """The owning role (``crm``, ``psa``, ``erp``) of ``domain``'s ``field_name``."""
        canonical = _CANONICAL.get(domain)
        if canonical:
            named = self.policy.owner(canonical, _POLICY_FIELD.get(field_name, field_name))
            if named:
                return self.role_of.get(named, named)
        table = OWNERS.get(domain, {})
        return table.get(field_name.split(".")[0]) or table.get("*")


def jsonable(value: Any) -> Any:
    """``value`` for a report: Decimals as text, tuples as lists, dicts recursively."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def mismatch(
    domain: str,
    key: str,
    field_name: str,
    values: Mapping[str, Any],
    owner: str | None,
    facts: dict[str, Fact],
    engagement: Engagement | None,
) -> Finding:
    """A field whose values differ: the systems whose value is not the owner's are stale
    (every system, without an owner)."""
    if owner is not None and owner in values:
        stale = tuple(s for s in values if s != owner and values[s] != values[owner])
    else:
        stale = tuple(values)
    shown = {s: jsonable(v) for s, v in values.items()}
    return Finding(domain, MISMATCH, key, field_name, shown, owner, stale, facts, engagement)


def erp_side(erp: str, records: Iterable[Fact]) -> dict[str, Fact]:
    """The ERP's records behind one finding (its invoices, a charge's lines), each keyed
    ``<erp>:<key>``, and the latest changed of them as ``erp`` itself: the owner's side the
    explanation dates."""
    records = list(records)
    side = {f"{erp}:{f.key}": f for f in records}
    if records:
        side[erp] = max(records, key=lambda f: f.modified_at or datetime.min.replace(tzinfo=UTC))
    return side


def same_text(a: Any, b: Any) -> bool:
    """Texts equal but for case and runs of white space."""
    return " ".join(str(a).casefold().split()) == " ".join(str(b).casefold().split())


def compare_customers(facts: Facts, view: HubView, owners: Owners) -> list[Finding]:
    """Each CRM account against the ERP customer its engagements were linked to, and the
    PSA client of their projects: one finding per field whose values differ, with every
    system's value."""
    found: list[Finding] = []
    customers = facts.get(CUSTOMERS, {})
    pairs: dict[tuple[str, str, str, str], list[Engagement]] = {}
    for e in view.engagements.values():
        if e.provisioned and e.account_id and e.customer_code:
            pair = (e.systems["crm"], e.account_id, e.systems["erp"], e.customer_code)
            pairs.setdefault(pair, []).append(e)
    for (crm, account_id, erp, code), engagements in sorted(pairs.items()):
        if crm not in customers or erp not in customers:
            continue
        engagement = engagements[0]
        account, customer = customers[crm].get(account_id), customers[erp].get(code)
        if account is None or customer is None:
            gone, there = (crm, erp) if account is None else (erp, crm)
            values = {gone: None, there: account_id if account is None else code}
            held = {s: f for s, f in ((crm, account), (erp, customer)) if f}
            found.append(
                Finding(
                    CUSTOMERS,
                    DANGLING,
                    f"{account_id}={code}",
                    None,
                    values,
                    None,
                    (gone,),
                    held,
                    engagement,
                )
            )
            continue
        held = {crm: account, erp: customer}
        client = _client(facts, engagements)
        if client is not None:
            held[client.system] = client
        for name in _CUSTOMER_FIELDS:
            values = {s: f.fields.get(name) for s, f in held.items()}
            values = {s: v for s, v in values.items() if v not in (None, (), "")}
            if len(values) < 2:
                continue  # kept by one side only (a customer matched by name has no tax id)
            role = owners.role(CUSTOMERS, name)
            owner = {"crm": crm, "erp": erp}.get(role or "")
            base = values.get(owner) if owner in values else next(iter(values.values()))
            stale = tuple(s for s, v in values.items() if not _same(name, v, base))
            if stale:
                stale = tuple(s for s in values if s != owner) if owner not in values else stale
                shown = {s: jsonable(v) for s, v in values.items()}
                found.append(
                    Finding(
                        CUSTOMERS, MISMATCH, account_id, name, shown, owner, stale, held, engagement
                    )
                )
    return found


_CUSTOMER_FIELDS = (
    "legal_name",
    "tax_ids",
    "country",
    "street",
    "city",
    "postal_code",
    "payment_terms_days",
    "currency",
)


def _same(name: str, a: Any, b: Any) -> bool:
    if name == "tax_ids":
        return all(any(same_tax_id(x, y) for y in b) for x in a) or all(
            any(same_tax_id(x, y) for y in a) for x in b
        )
    if name in ("legal_name", "street", "city", "postal_code"):
        return same_text(a, b)
    return bool(a == b)


def _client(facts: Facts, engagements: list[Engagement]) -> Fact | None:
    """The PSA client of the engagements' projects (their first project read that names
    one; a client is kept per name, so one account has one)."""
    for e in engagements:
        psa = e.systems.get("psa")
        project = facts.get(PROJECTS, {}).get(psa or "", {}).get(e.project_key)
        client_id = project.fields.get("client_id") if project else None
        if psa and client_id:
            client = facts.get(CUSTOMERS, {}).get(psa, {}).get(str(client_id))
            if client is not None:
                return Fact(
                    client.domain,
                    client.key,
                    client.system,
                    client.external_id,
                    {"legal_name": client.fields.get("legal_name")},
                    client.modified_at,
                    client.object,
                )  # only its name: its currency is its first deal's, not the account's
    return None


def compare_projects(facts: Facts, view: HubView, owners: Owners, deals: set[str]) -> list[Finding]:
    """Each provisioned engagement's project in its PSA and its ERP: existence, status, rates
    and fee; projects of the CRM's deals that no engagement knows are orphans."""
    found: list[Finding] = []
    by_system = facts.get(PROJECTS, {})
    for key, e in sorted(view.engagements.items()):
        if not e.provisioned:
            continue
        psa, erp = e.systems.get("psa"), e.systems.get("erp")
        read = {s: by_system[s].get(key) for s in (psa, erp) if s and s in by_system}
        for system, fact in read.items():
            if fact is None:
                values = {s: ("absent" if f is None else "present") for s, f in read.items()}
                others = {s: f for s, f in read.items() if f is not None}
                found.append(
                    Finding(PROJECTS, MISSING, key, None, values, None, (system,), others, e)
                )
        present = {s: f for s, f in read.items() if f is not None}
        found.extend(_status(key, e, present, owners))
        for system, fact in present.items():
            found.extend(_rates(key, e, system, fact))
        fees: dict[str, Any] = {
            s: f.fields["fee"] for s, f in present.items() if f.fields.get("fee")
        }
        if e.fee is not None and fees and any(Decimal(str(v)) != e.fee for v in fees.values()):
            fee_values = {e.systems["crm"]: e.fee, **fees}  # the deal's fee is the owner's
            found.append(
                mismatch(PROJECTS, key, "fee", fee_values, e.systems["crm"], dict(present), e)
            )
    for system, projects in sorted(by_system.items()):
        for key, fact in sorted(projects.items()):
            if key not in view.engagements and key in deals:
                found.append(
                    Finding(
                        PROJECTS,
                        ORPHAN,
                        key,
                        None,
                        {system: fact.external_id},
                        None,
                        (system,),
                        {system: fact},
                    )
                )
    return found


def _status(key: str, e: Engagement, present: dict[str, Fact], owners: Owners) -> list[Finding]:
    statuses = {s: f.fields.get("status") for s, f in present.items()}
    if e.closed:
        if any(v != "closed" for v in statuses.values()):  # the deal closed it: the CRM owns it
            values = {e.systems["crm"]: "closed", **statuses}
            return [mismatch(PROJECTS, key, "status", values, e.systems["crm"], dict(present), e)]
        return []
    if len(set(statuses.values())) <= 1:
        return []
    role = owners.role(PROJECTS, "status") or ""
    return [mismatch(PROJECTS, key, "status", statuses, e.systems.get(role), dict(present), e)]


def _rates(key: str, e: Engagement, system: str, fact: Fact) -> list[Finding]:
    rates = fact.fields.get("rates")
    if not isinstance(rates, Mapping) or e.billing_method == "fixed_fee":
        return []
    found = []
    for task, rate in sorted(e.rates.items()):
        held = rates.get(task)
        if held is None or Decimal(str(held)) != rate:
            values = {e.systems["crm"]: rate, system: held}
            found.append(
                mismatch(
                    PROJECTS, key, f"rates.{task}", values, e.systems["crm"], {system: fact}, e
                )
            )
    return found


def index(facts: Iterable[Fact]) -> dict[str, dict[str, dict[str, Fact]]]:
    """``facts`` as ``[domain][system][key]`` (a later fact of one key replaces an earlier)."""
    out: dict[str, dict[str, dict[str, Fact]]] = {}
    for fact in facts:
        out.setdefault(fact.domain, {}).setdefault(fact.system, {})[fact.key] = fact
    return out


def same_tax_id(a: str, b: str) -> bool:
    """Two tax ids are one: equal, or equal but for the country letters one of them lacks
    (Tryton's ``gb_vat`` ``197923760`` is Salesforce's ``GB197923760``; ``GB123`` and
    ``DE123`` stay two)."""
    if a == b:
        return True
    bare_a, bare_b = _bare(a), _bare(b)
    return bare_a == bare_b and (bare_a == a or bare_b == b)


def _bare(tax_id: str) -> str:
    return str(tax_id).lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ") or str(tax_id)
