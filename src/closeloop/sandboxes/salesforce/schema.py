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

Custom objects (``custom_objects:`` of the schema file) are described as a real org describes
them: ``custom: true``, a key prefix like ``a0M``, the standard fields every custom object has
(``Id``, ``Name``, audit fields, ``CurrencyIsoCode``, ``OwnerId`` unless it is the detail of a
master-detail relationship). A ``master_detail`` field makes the object a detail of its master:
the field is required and not reparentable, the master gets a cascade-delete child
relationship, and the master may declare ``summary`` (roll-up summary) fields over it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
LABELS = {
    "OpportunityLineItem": ("Opportunity Product", "Opportunity Product"),
    "Opportunity": ("Opportunity", "Opportunities"),
    "Pricebook2": ("Price Book", "Price Books"),
    "PricebookEntry": ("Price Book Entry", "Price Book Entries"),
    "Product2": ("Product", "Products"),
}
#: Child relationships of the standard objects: parent -> {relationship: (child, field)}
#: (all cascade-delete). Custom master-detail fields add theirs (:attr:`SObjectDef.children`).
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
#: The standard fields of every custom object besides the audit fields (``OwnerId`` only when
#: the object is not the detail of a master-detail relationship: its master owns it). A text
#: ``Name`` is optional through the API: a record created without one is named by its id.
_CUSTOM_OWNER = "OwnerId reference 18 CUD ->User:Owner"
_CUSTOM_NAME = "Name string 80 CUDKL"
_KEY_PREFIX = re.compile(r"^a[0-9A-Za-z]{2}$")
ROLL_UP_OPERATIONS = ("count", "sum", "min", "max")


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
    default_value: str | None = None
    calculated: bool = False
    cascade_delete: bool = False
    relationship_order: int | None = None

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
            "calculated": self.calculated,
            "calculatedFormula": None,
            "cascadeDelete": self.cascade_delete,
            "defaultValue": self.default_value,
            "filterable": True,
            "sortable": self.type != "textarea" or self.length <= 255,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "relationshipOrder": self.relationship_order,
            "writeRequiresMasterRead": False,
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": v == self.default_value,
                    "label": v,
                    "validFor": None,
                    "value": v,
                }
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


@dataclass(frozen=True)
class ChildRelationship:
    """A child relationship of an object: ``child`` records whose ``field`` names the parent;
    with ``cascade_delete`` they go to the recycle bin with it."""

    child: str
    field: str
    cascade_delete: bool = True


@dataclass(frozen=True)
class RollUp:
    """A roll-up summary field of a master object: ``operation`` (``count``, ``sum``,
    ``min``, ``max``) over the ``child`` records whose master-detail field ``via`` names the
    master, of their ``summarized`` field (``None`` for a count), counting only those that
    match ``where`` (the parsed SOQL condition of ``filter``; ``None``: all)."""

    field: str
    operation: str
    child: str
    via: str
    summarized: str | None = None
    filter: str = ""
    where: Any = None


@dataclass
class SObjectDef:
    """One sObject: its fields by name (case-insensitive lookup through :meth:`field`), its
    child relationships (by relationship name) and roll-up summary fields (by field name)."""

    name: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    label: str = ""
    label_plural: str = ""
    custom: bool = False
    children: dict[str, ChildRelationship] = field(default_factory=dict)
    roll_ups: dict[str, RollUp] = field(default_factory=dict)

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

    def masters(self) -> list[FieldDef]:
        """The object's master-detail fields (a detail's masters)."""
        return [f for f in self.fields.values() if f.type == "reference" and f.cascade_delete]

    def describe(self, version: str) -> dict[str, Any]:
        """``GET /sobjects/<name>/describe``."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label or self.name,
            "labelPlural": self.label_plural or f"{self.label or self.name}s",
            "keyPrefix": self.key_prefix,
            "custom": self.custom,
            "customSetting": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "childRelationships": [
                {
                    "childSObject": rel.child,
                    "field": rel.field,
                    "relationshipName": name,
                    "cascadeDelete": rel.cascade_delete,
                    "restrictedDelete": False,
                    "deprecatedAndHidden": False,
                    "junctionIdListNames": [],
                    "junctionReferenceTo": [],
                }
                for name, rel in self.children.items()
            ],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


_FIELD_TYPES = TEXT_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime", "reference"}


def _custom_field(sobject: str, name: str, spec: Mapping[str, Any]) -> FieldDef:
    if not name.endswith("__c"):
        raise SchemaError(f"{sobject}.{name}: custom field names end in __c")
    kind = str(spec.get("type", ""))
    label = str(spec.get("label", name[:-3].replace("_", " ")))
    if kind == "master_detail":
        target = spec.get("reference_to")
        if not target:
            raise SchemaError(f"{sobject}.{name}: a master-detail field needs reference_to")
        return FieldDef(
            name=name,
            type="reference",
            length=18,
            createable=True,
            updateable=bool(spec.get("reparentable", False)),
            custom=True,
            label=label,
            reference_to=(str(target),),
            relationship_name=name[:-3] + "__r",
            cascade_delete=True,
            relationship_order=0,
        )
    if kind == "summary":  # the result's type is set once the summarized field is known
        return FieldDef(
            name=name,
            type="double",
            precision=18,
            nillable=True,
            custom=True,
            label=label,
            calculated=True,
        )
    if kind not in _FIELD_TYPES:
        raise SchemaError(f"{sobject}.{name}: unknown field type {kind!r}")
    if kind == "id":
        raise SchemaError(f"{sobject}.{name}: a custom field cannot be of type id")
    external = bool(spec.get("external_id", False))
    if external and kind not in ("string", "int", "double", "email"):
        raise SchemaError(f"{sobject}.{name}: an external id must be text, email or a number")
    values = tuple(str(v) for v in spec.get("values", ()))
    if kind == "picklist" and not values:
        raise SchemaError(f"{sobject}.{name}: a picklist needs values")
    default = spec.get("default")
    if default is not None and str(default) not in values:
        raise SchemaError(f"{sobject}.{name}: the default {default!r} is not among the values")
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
        defaulted_on_create=kind == "boolean" or default is not None,
        external_id=external,
        unique=bool(spec.get("unique", False)),
        case_sensitive=bool(spec.get("case_sensitive", False)),
        custom=True,
        label=label,
        reference_to=(str(target),) if target else (),
        relationship_name=name[:-3] + "__r" if target else None,
        picklist=values,
        restricted_picklist=bool(spec.get("restricted", False)),
        default_value=None if default is None else str(default),
    )


def _custom_object(
    path: Path, name: str, spec: Mapping[str, Any], objects: dict[str, SObjectDef]
) -> SObjectDef:
    if not name.endswith("__c"):
        raise SchemaError(f"{path}: custom object names end in __c, not {name!r}")
    if name in objects:
        raise SchemaError(f"{path}: {name} is declared twice")
    prefix = str(spec.get("key_prefix", ""))
    if not _KEY_PREFIX.match(prefix):
        raise SchemaError(
            f"{path}: {name}: a custom object's key_prefix is like a0M, not {prefix!r}"
        )
    taken = {o.key_prefix: o.name for o in objects.values()}
    if prefix in taken:
        raise SchemaError(f"{path}: {name}: key prefix {prefix} is {taken[prefix]}'s")
    label = str(spec.get("label", name[:-3].replace("_", " ")))
    plural = str(spec.get("label_plural", f"{label}s"))
    sobject = SObjectDef(name, prefix, label=label, label_plural=plural, custom=True)
    for line in (*_AUDIT, _CUSTOM_NAME):
        parsed = parse_field(name, line)
        if parsed.name == "Name":
            parsed = replace(parsed, label=str(spec.get("name_label", f"{label} Name")))
        sobject.fields[parsed.name] = parsed
    return sobject


def load_schema(path: Path = SHIPPED_SCHEMA) -> dict[str, SObjectDef]:
    """The org's sObjects: standard fields, custom objects and the custom fields of ``path``.

    The file is YAML: ``custom_objects: {<Name__c>: {label, label_plural, key_prefix,
    name_label}}`` and ``objects: {<Object>: {<Name__c>: {type, length, values, default,
    external_id, unique, case_sensitive, reference_to, label, restricted}}}``. Besides the
    field types of describe(), ``type: master_detail`` (with ``reference_to`` and
    ``child_relationship``, the master's name for its details, ending in ``__r``) and
    ``type: summary`` (a roll-up summary field of the master: ``operation`` count, sum, min
    or max, ``summarized`` ``Child__c.Field__c`` or, for a count, ``Child__c``, and an
    optional SOQL ``filter``). Raises :class:`SchemaError` for an unknown object, a bad type,
    a name clash or a roll-up that does not fit.
    """
    data = yaml.safe_load(path.read_text()) or {}
    objects: dict[str, SObjectDef] = {}
    for name, specs in STANDARD_FIELDS.items():
        label, plural = LABELS.get(name, (name, f"{name}s"))
        sobject = SObjectDef(name, KEY_PREFIXES[name], label=label, label_plural=plural)
        for line in (*_AUDIT, *specs):
            parsed = parse_field(name, line)
            sobject.fields[parsed.name] = parsed
        sobject.children = {
            rel: ChildRelationship(child, ref)
            for rel, (child, ref) in CHILD_RELATIONSHIPS.get(name, {}).items()
        }
        objects[name] = sobject
    for name, declared in (data.get("custom_objects") or {}).items():
        objects[name] = _custom_object(path, str(name), declared or {}, objects)
    summaries: list[tuple[str, str, Mapping[str, Any]]] = []
    for name, customs in (data.get("objects") or {}).items():
        if name not in objects:
            raise SchemaError(f"{path}: unknown object {name!r} (known: {', '.join(objects)})")
        for field_name, given in (customs or {}).items():
            if objects[name].field(field_name) is not None:
                raise SchemaError(f"{path}: {name}.{field_name} is declared twice")
            spec: Mapping[str, Any] = given or {}
            parsed = _custom_field(name, field_name, spec)
            objects[name].fields[field_name] = parsed
            if spec.get("type") == "master_detail":
                _link_master(path, objects, objects[name], parsed, spec)
            if spec.get("type") == "summary":
                summaries.append((name, field_name, spec))
    for sobject in objects.values():  # a detail's owner is its master's
        if sobject.custom and not sobject.masters():
            owner = parse_field(sobject.name, _CUSTOM_OWNER)
            sobject.fields = {"Id": sobject.fields["Id"], "OwnerId": owner, **sobject.fields}
    for name, field_name, spec in summaries:
        _roll_up(path, objects, objects[name], field_name, spec)
    return objects


def _link_master(
    path: Path,
    objects: dict[str, SObjectDef],
    detail: SObjectDef,
    fdef: FieldDef,
    spec: Mapping[str, Any],
) -> None:
    where = f"{path}: {detail.name}.{fdef.name}"
    if not detail.custom:
        raise SchemaError(f"{where}: only a custom object can be the detail of a master-detail")
    master = objects.get(fdef.reference_to[0])
    if master is None:
        raise SchemaError(f"{where}: unknown master object {fdef.reference_to[0]!r}")
    if len(detail.masters()) > 2:
        raise SchemaError(f"{where}: an object has at most two master-detail relationships")
    relationship = str(spec.get("child_relationship", ""))
    if not relationship.endswith("__r") or master.children.get(relationship):
        raise SchemaError(
            f"{where}: child_relationship must be a new name on {master.name} ending in __r"
        )
    master.children[relationship] = ChildRelationship(detail.name, fdef.name)


def _roll_up(
    path: Path,
    objects: dict[str, SObjectDef],
    master: SObjectDef,
    field_name: str,
    spec: Mapping[str, Any],
) -> None:
    from closeloop.sandboxes.salesforce import soql  # soql needs records, which needs this

    where = f"{path}: {master.name}.{field_name}"
    operation = str(spec.get("operation", "")).lower()
    if operation not in ROLL_UP_OPERATIONS:
        raise SchemaError(f"{where}: operation is one of {', '.join(ROLL_UP_OPERATIONS)}")
    child_name, _, summarized = str(spec.get("summarized", "")).partition(".")
    child = objects.get(child_name)
    masters = child.masters() if child is not None else []
    via = next((f for f in masters if f.reference_to[0] == master.name), None)
    if child is None or via is None:
        raise SchemaError(f"{where}: {child_name!r} is not a detail of {master.name}")
    placeholder = master.fields[field_name]
    if operation == "count":
        if summarized:
            raise SchemaError(f"{where}: a count summarizes records: summarized: {child_name}")
        result = replace(placeholder, type="double", precision=18, scale=0)
    else:
        target = child.field(summarized) if summarized else None
        kinds = NUMBER_TYPES if operation == "sum" else NUMBER_TYPES | {"date", "datetime"}
        if target is None or target.type not in kinds:
            raise SchemaError(f"{where}: {operation} needs a number field of {child_name}")
        summarized = target.name
        result = replace(
            placeholder, type=target.type, precision=target.precision, scale=target.scale
        )
    text = str(spec.get("filter") or "")
    condition = None
    if text:
        try:
            condition = soql.parse(f"SELECT Id FROM {child.name} WHERE {text}").where
        except soql.MalformedQuery as exc:
            raise SchemaError(f"{where}: filter: {exc}") from None
        stack = [condition]
        while stack:
            node = stack.pop()
            if isinstance(node, soql.Logical):
                stack.extend(node.parts)
            elif child.field(node.field) is None:
                raise SchemaError(f"{where}: filter: {child.name} has no field {node.field!r}")
    master.fields[field_name] = result
    master.roll_ups[field_name] = RollUp(
        field_name, operation, child.name, via.name, summarized or None, text, condition
    )
