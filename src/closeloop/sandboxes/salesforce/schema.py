"""The sandbox org's sObjects: standard fields as Salesforce's describe() gives them, custom
fields from a schema file, and the describe() answers built from both.

Standard fields are written from the *Salesforce Object Reference* (and checked against real
describe() results in ``tests/test_salesforce_sandbox.py`` when ``../shared/realdata`` is
there). Each is one line: ``name type [length|precision.scale] [flags] [->Target:Relationship]``
with flags ``N`` nillable, ``C`` createable, ``U`` updateable, ``D`` defaulted on create,
``K`` name field, ``X`` external id, ``Q`` unique, ``S`` case sensitive, ``L`` id lookup
(an upsert may match on it, like an external id).

The org is multi-currency (every object has ``CurrencyIsoCode``) so that the hub's money
always carries its currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "62.0"
SHIPPED_SCHEMA = Path(__file__).with_name("schema.yaml")

_AUDIT = (
    "Id id 18 D",
    "IsDeleted boolean D",
    "CreatedDate datetime D",
    "CreatedById reference 18 D ->User:CreatedBy",
    "LastModifiedDate datetime D",
    "LastModifiedById reference 18 D ->User:LastModifiedBy",
    "SystemModstamp datetime D",
    "CurrencyIsoCode picklist 3 NCUD",
)
_ADDRESS = (
    "{p}Street textarea 255 NCU",
    "{p}City string 40 NCU",
    "{p}State string 80 NCU",
    "{p}PostalCode string 20 NCU",
    "{p}Country string 80 NCU",
)
STANDARD_FIELDS: dict[str, tuple[str, ...]] = {
    "User": (
        "Username string 80 CUQL",
        "LastName string 80 CU",
        "FirstName string 40 NCU",
        "Name string 121 K",
        "Email email 128 CU",
        "Alias string 8 CU",
        "Title string 80 NCU",
        "EmployeeNumber string 20 NCU",
        "IsActive boolean CUD",
    ),
    "Account": (
        "MasterRecordId reference 18 N ->Account:MasterRecord",
        "Name string 255 CUK",
        "Type picklist 40 NCU",
        "ParentId reference 18 NCU ->Account:Parent",
        *(f.format(p="Billing") for f in _ADDRESS),
        *(f.format(p="Shipping") for f in _ADDRESS),
        "Phone phone 40 NCU",
        "Fax phone 40 NCU",
        "AccountNumber string 40 NCU",
        "Website url 255 NCU",
        "Industry picklist 40 NCU",
        "AnnualRevenue currency 18.0 NCU",
        "NumberOfEmployees int NCU",
        "Description textarea 32000 NCU",
        "OwnerId reference 18 CUD ->User:Owner",
    ),
    "Contact": (
        "MasterRecordId reference 18 N ->Contact:MasterRecord",
        "AccountId reference 18 NCU ->Account:Account",
        "LastName string 80 CU",
        "FirstName string 40 NCU",
        "Salutation picklist 40 NCU",
        "Name string 121 K",
        *(f.format(p="Mailing") for f in _ADDRESS),
        "Phone phone 40 NCU",
        "MobilePhone phone 40 NCU",
        "Email email 80 NCUL",
        "Title string 128 NCU",
        "Department string 80 NCU",
        "Description textarea 32000 NCU",
        "OwnerId reference 18 CUD ->User:Owner",
    ),
    "Opportunity": (
        "AccountId reference 18 NCU ->Account:Account",
        "IsPrivate boolean CUD",
        "Name string 120 CUKL",
        "Description textarea 32000 NCU",
        "StageName picklist 255 CU",
        "Amount currency 18.2 NCU",
        "Probability percent 3.0 NCUD",
        "ExpectedRevenue currency 18.2 N",
        "CloseDate date CU",
        "Type picklist 255 NCU",
        "NextStep string 255 NCU",
        "LeadSource picklist 255 NCU",
        "IsClosed boolean D",
        "IsWon boolean D",
        "ForecastCategoryName picklist 255 NCUD",
        "HasOpportunityLineItem boolean D",
        "Pricebook2Id reference 18 NCUD ->Pricebook2:Pricebook2",
        "OwnerId reference 18 CUD ->User:Owner",
        "ContactId reference 18 NC ->Contact:",
    ),
    "Product2": (
        "Name string 255 CUK",
        "ProductCode string 255 NCU",
        "Description textarea 4000 NCU",
        "IsActive boolean CUD",
        "Family picklist 40 NCU",
    ),
    "Pricebook2": (
        "Name string 255 CUK",
        "IsActive boolean CUD",
        "IsStandard boolean D",
        "Description string 255 NCU",
    ),
    "PricebookEntry": (
        "Name string 255 NK",
        "Pricebook2Id reference 18 C ->Pricebook2:Pricebook2",
        "Product2Id reference 18 C ->Product2:Product2",
        "UnitPrice currency 18.2 CU",
        "IsActive boolean CUD",
        "UseStandardPrice boolean CUD",
        "ProductCode string 255 N",
    ),
    "OpportunityLineItem": (
        "OpportunityId reference 18 C ->Opportunity:Opportunity",
        "SortOrder int NCU",
        "PricebookEntryId reference 18 NC ->PricebookEntry:PricebookEntry",
        "Product2Id reference 18 NC ->Product2:Product2",
        "Name string 376 NK",
        "Quantity double 18.2 CU",
        "TotalPrice currency 18.2 NCU",
        "UnitPrice currency 18.2 NCU",
        "ListPrice currency 18.2 N",
        "ServiceDate date NCU",
        "Description string 255 NCU",
    ),
}
KEY_PREFIXES = {
    "User": "005",
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "Product2": "01t",
    "Pricebook2": "01s",
    "PricebookEntry": "01u",
    "OpportunityLineItem": "00k",
}
LABELS = {"OpportunityLineItem": ("Opportunity Product", "Opportunity Product")}
#: Child relationships the SOQL subset can follow: parent object -> {relationship: (child, field)}.
CHILD_RELATIONSHIPS: dict[str, dict[str, tuple[str, str]]] = {
    "Account": {
        "Contacts": ("Contact", "AccountId"),
        "Opportunities": ("Opportunity", "AccountId"),
    },
    "Opportunity": {"OpportunityLineItems": ("OpportunityLineItem", "OpportunityId")},
}
STAGES: tuple[tuple[str, int, bool, bool, str], ...] = (
    # (value, default probability, closed, won, forecast category name)
    ("Prospecting", 10, False, False, "Pipeline"),
    ("Qualification", 10, False, False, "Pipeline"),
    ("Needs Analysis", 20, False, False, "Pipeline"),
    ("Value Proposition", 50, False, False, "Pipeline"),
    ("Id. Decision Makers", 60, False, False, "Pipeline"),
    ("Perception Analysis", 70, False, False, "Pipeline"),
    ("Proposal/Price Quote", 75, False, False, "Pipeline"),
    ("Negotiation/Review", 90, False, False, "Pipeline"),
    ("Closed Won", 100, True, True, "Closed"),
    ("Closed Lost", 0, True, False, "Omitted"),
)
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Account", "Type"): (
        "Prospect",
        "Customer - Direct",
        "Customer - Channel",
        "Channel Partner / Reseller",
        "Installation Partner",
        "Technology Partner",
        "Other",
    ),
    ("Opportunity", "StageName"): tuple(s[0] for s in STAGES),
    ("Opportunity", "Type"): (
        "Existing Customer - Upgrade",
        "Existing Customer - Replacement",
        "Existing Customer - Downgrade",
        "New Customer",
    ),
    ("Opportunity", "ForecastCategoryName"): (
        "Omitted",
        "Pipeline",
        "Best Case",
        "Commit",
        "Closed",
    ),
    ("Contact", "Salutation"): ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof."),
}
RESTRICTED = {("Opportunity", "ForecastCategoryName")}
CURRENCIES = ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "NZD", "NOK", "SEK", "DKK", "INR", "JPY")
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "currency": "xsd:double",
    "double": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
TEXT_TYPES = frozenset({"string", "textarea", "picklist", "email", "phone", "url", "id"})
NUMBER_TYPES = frozenset({"currency", "double", "percent", "int"})


class SchemaError(ValueError):
    """A schema file that cannot be used; the message names the object and field."""


@dataclass(frozen=True)
class FieldDef:
    """One field as describe() reports it (the subset of attributes integrations read)."""

    name: str
    type: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    nillable: bool = False
    createable: bool = False
    updateable: bool = False
    defaulted_on_create: bool = False
    name_field: bool = False
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    id_lookup: bool = False
    custom: bool = False
    label: str = ""
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    picklist: tuple[str, ...] = ()
    restricted_picklist: bool = False

    def describe(self) -> dict[str, Any]:
        """The field's entry in ``describe()['fields']``."""
        text = self.type in TEXT_TYPES or self.type == "reference"
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length if text else 0,
            "byteLength": self.length * 3 if text else 0,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "nameField": self.name_field,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.type == "id" or self.external_id or self.id_lookup,
            "custom": self.custom,
            "calculated": False,
            "filterable": True,
            "sortable": self.type != "textarea" or self.length <= 255,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
        }


def parse_field(sobject: str, spec: str) -> FieldDef:
    """One standard field from its line (see the module docstring)."""
    parts = spec.split()
    name, kind, rest = parts[0], parts[1], parts[2:]
    length = precision = scale = 0
    flags, relationship = "", None
    reference: tuple[str, ...] = ()
    for part in rest:
        if part.startswith("->"):
            target, _, rel = part[2:].partition(":")
            reference, relationship = (target,), rel or None
        elif part[0].isdigit():
            whole, _, fraction = part.partition(".")
            if kind in TEXT_TYPES or kind == "reference":
                length = int(whole)
            else:
                precision, scale = int(whole), int(fraction or 0)
        else:
            flags = part
    picklist = CURRENCIES if name == "CurrencyIsoCode" else PICKLISTS.get((sobject, name), ())
    return FieldDef(
        name=name,
        type=kind,
        length=length,
        precision=precision,
        scale=scale,
        nillable="N" in flags,
        createable="C" in flags,
        updateable="U" in flags,
        defaulted_on_create="D" in flags,
        name_field="K" in flags,
        external_id="X" in flags,
        unique="Q" in flags,
        case_sensitive="S" in flags,
        id_lookup="L" in flags,
        reference_to=reference,
        relationship_name=relationship,
        picklist=picklist,
        restricted_picklist=(sobject, name) in RESTRICTED or name == "CurrencyIsoCode",
    )


@dataclass
class SObjectDef:
    """One sObject: its fields by name (case-insensitive lookup through :meth:`field`)."""

    name: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)

    def field(self, name: str) -> FieldDef | None:
        """The field called ``name`` in any case, or ``None``."""
        found = self.fields.get(name)
        if found is None:
            lowered = name.lower()
            found = next((f for f in self.fields.values() if f.name.lower() == lowered), None)
        return found

    def external_ids(self) -> list[FieldDef]:
        """Fields an upsert may match on: external ids and id lookups."""
        return [f for f in self.fields.values() if f.external_id or f.id_lookup or f.type == "id"]

    def describe(self, version: str) -> dict[str, Any]:
        """``GET /sobjects/<name>/describe``."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        label, plural = LABELS.get(self.name, (self.name, f"{self.name}s"))
        return {
            "name": self.name,
            "label": label,
            "labelPlural": plural,
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "childRelationships": [
                {
                    "childSObject": child,
                    "field": ref,
                    "relationshipName": rel,
                    "cascadeDelete": True,
                }
                for rel, (child, ref) in CHILD_RELATIONSHIPS.get(self.name, {}).items()
            ],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _custom_field(sobject: str, name: str, spec: Mapping[str, Any]) -> FieldDef:
    if not name.endswith("__c"):
        raise SchemaError(f"{sobject}.{name}: custom field names end in __c")
    kind = str(spec.get("type", ""))
    if kind not in TEXT_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime", "reference"}:
        raise SchemaError(f"{sobject}.{name}: unknown field type {kind!r}")
    if kind == "id":
        raise SchemaError(f"{sobject}.{name}: a custom field cannot be of type id")
    external = bool(spec.get("external_id", False))
    if external and kind not in ("string", "int", "double", "email"):
        raise SchemaError(f"{sobject}.{name}: an external id must be text, email or a number")
    values = tuple(str(v) for v in spec.get("values", ()))
    if kind == "picklist" and not values:
        raise SchemaError(f"{sobject}.{name}: a picklist needs values")
    target = spec.get("reference_to")
    return FieldDef(
        name=name,
        type=kind,
        length=int(spec.get("length", 255 if kind in TEXT_TYPES else 18 if target else 0)),
        precision=int(spec.get("precision", 18 if kind in NUMBER_TYPES else 0)),
        scale=int(spec.get("scale", 2 if kind in ("currency", "double") else 0)),
        nillable=kind != "boolean",
        createable=True,
        updateable=True,
        defaulted_on_create=kind == "boolean",
        external_id=external,
        unique=bool(spec.get("unique", False)),
        case_sensitive=bool(spec.get("case_sensitive", False)),
        custom=True,
        label=str(spec.get("label", name[:-3].replace("_", " "))),
        reference_to=(str(target),) if target else (),
        relationship_name=name[:-3] + "__r" if target else None,
        picklist=values,
        restricted_picklist=bool(spec.get("restricted", False)),
    )


def load_schema(path: Path = SHIPPED_SCHEMA) -> dict[str, SObjectDef]:
    """The org's sObjects: standard fields plus the custom fields of ``path``.

    The file is YAML: ``objects: {<Object>: {<Name__c>: {type, length, values, external_id,
    unique, case_sensitive, reference_to, label, restricted}}}``. Raises :class:`SchemaError`
    for an unknown object, a bad type or a name clash.
    """
    data = yaml.safe_load(path.read_text()) or {}
    objects = {}
    for name, specs in STANDARD_FIELDS.items():
        sobject = SObjectDef(name, KEY_PREFIXES[name])
        for spec in (*_AUDIT, *specs):
            parsed = parse_field(name, spec)
            sobject.fields[parsed.name] = parsed
        objects[name] = sobject
    for name, customs in (data.get("objects") or {}).items():
        if name not in objects:
            raise SchemaError(f"{path}: unknown object {name!r} (known: {', '.join(objects)})")
        for field_name, spec in (customs or {}).items():
            if objects[name].field(field_name) is not None:
                raise SchemaError(f"{path}: {name}.{field_name} is declared twice")
            objects[name].fields[field_name] = _custom_field(name, field_name, spec or {})
    return objects
