"""The Salesforce connector as the engine sees it: a change feed by SOQL polling on
``SystemModstamp``, writes through sObject Collections packed into Composite calls, and
lookups by idempotency key.

**Change feed.** ``SELECT <all fields> FROM <object> WHERE SystemModstamp >= :since AND
SystemModstamp < :upper ORDER BY SystemModstamp, Id`` through ``queryAll`` (deleted records
come with ``IsDeleted = true``), following ``nextRecordsUrl``. ``upper`` is the org's clock at
the start of the poll: a record changed while the poll pages has a newer ``SystemModstamp``;
if its new values come back on a later page it is left for the next poll, so the watermark
never passes a change that was not delivered. Thousands of records may share one
``SystemModstamp``: the engine's overlap window and ``(Id, SystemModstamp)`` dedupe handle
them, as no keyset on the timestamp alone could. Opportunities come with their account's
fields and, in the same query, their child records (a subquery per child relationship of
:data:`CHILDREN` the org has: ``OpportunityLineItems`` and the milestones of the custom
``Milestone__c`` object, ``Milestones__r``), so a deal arrives whole. A milestone is the
detail of its opportunity in a master-detail relationship and the opportunity sums them in
roll-up summary fields: writing a milestone recalculates them and so changes the
opportunity's ``SystemModstamp``, which brings the deal back through the feed. An
opportunity's version is the later of its own and its account's ``SystemModstamp``, so a
fixed account brings its deals back (those polls read every page first, then yield in
version order).

**Writes.** The ``crm`` role's canonical operations, as record updates (:mod:`.translate`),
and Salesforce's own ``update`` (payload ``{"object", "id", "fields"}``) and ``upsert``
(``{"object", "fields", "external_id", "external_id_field"}``, by default on
``Closeloop_Id__c``). Each
written record also gets ``Closeloop_Sync_Key__c`` = the command's idempotency key, which is
what :meth:`SalesforceConnector.find` looks up after a lost answer. Commands are grouped by
operation and object into Collections of 200 records; several Collections go in one Composite
call (at most 5 per call: Salesforce's limit on Collections subrequests), so 1,000 record
writes cost one API request.

Idempotency keys have the form ``<system>:<operation>:<rest>``: a canonical operation's rest
starts with the record (``opportunity:<id>``), an own ``update``'s operation part is the
sObject (``salesforce:Opportunity:<rest>``, :func:`idempotency_key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from closeloop.connectors.salesforce import facts
from closeloop.connectors.salesforce.client import (
    SalesforceApiError,
    SalesforceClient,
    soql_datetime,
    soql_literal,
)
from closeloop.connectors.salesforce.translate import key_sobject, native
from closeloop.domain.changes import Change, parse_instant
from closeloop.domain.commands import (
    Ambiguous,
    Applied,
    Command,
    ExceptionClass,
    Outcome,
    Permanent,
    Transient,
)
from closeloop.ports.connector import AmbiguousError, ConnectorLimits, TransientError
from closeloop.ports.reconcile import Fact

SYSTEM = "salesforce"
KEY_PREFIX = "SF"
DEFAULT_OBJECTS = ("Account", "Opportunity")
SYNC_KEY_FIELD = "Closeloop_Sync_Key__c"
DEFAULT_EXTERNAL_ID = "Closeloop_Id__c"
COLLECTION_SIZE = 200
COLLECTIONS_PER_COMPOSITE = 5
#: Child records read with a record, one subquery each: (relationship, child object, ORDER BY
#: items, each kept when the child has its field). A relationship the org does not have (its
#: describe does not list it) is left out: an org without milestones still gives its deals.
CHILDREN: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "Opportunity": (
        ("OpportunityLineItems", "OpportunityLineItem", ()),
        ("Milestones__r", "Milestone__c", ("Planned_Date__c NULLS LAST", "Id")),
    )
}
#: Parents read with a record, whose changes are changes of the record (relationship, object).
PARENTS = {"Opportunity": ("Account", "Account")}
_SKIPPED_TYPES = frozenset({"address", "location", "base64", "complexvalue"})
_VALIDATION = ExceptionClass.VALIDATION
_ERROR_CLASSES = {
    "DUPLICATE_VALUE": ExceptionClass.DUPLICATE,
    "DUPLICATES_DETECTED": ExceptionClass.DUPLICATE,
    "NOT_FOUND": ExceptionClass.NOT_FOUND,
    "ENTITY_IS_DELETED": ExceptionClass.NOT_FOUND,
    "INVALID_CROSS_REFERENCE_KEY": ExceptionClass.NOT_FOUND,
    "INSUFFICIENT_ACCESS_OR_READONLY": ExceptionClass.AUTH,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": ExceptionClass.AUTH,
    "ENTITY_IS_LOCKED": ExceptionClass.CONFLICT,
}
_TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def idempotency_key(sobject: str, *parts: str) -> str:
    """``salesforce:<Object>:<part>:...``: the form :meth:`SalesforceConnector.find` reads."""
    return ":".join((SYSTEM, sobject, *parts))


def sync_stamp(key: str) -> str:
    """The value stored in ``Closeloop_Sync_Key__c`` for ``key`` (a hash when the key is
    longer than the field's 255 characters)."""
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def plain(value: Any) -> Any:
    """A record as a change payload: ``attributes`` dropped, numbers as exact text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Decimal | float):
        return str(value)
    return value


class SalesforceConnector:
    """Reads and writes one org through :class:`SalesforceClient`.

    ``objects``: the sObjects whose changes are polled. ``batch_size``: commands per
    :meth:`execute` (up to 1,000: five Collections in one Composite call). ``key_prefix``:
    the prefix of the project keys the hub makes of the org's deals (its ``key_prefix``
    setting, by default :data:`KEY_PREFIX`).
    """

    def __init__(
        self,
        client: SalesforceClient,
        *,
        system: str = SYSTEM,
        objects: Sequence[str] = DEFAULT_OBJECTS,
        batch_size: int = COLLECTION_SIZE * COLLECTIONS_PER_COMPOSITE,
        max_concurrent: int = 5,
        call_timeout_s: float = 30.0,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        self.client = client
        self._system = system
        self._key_prefix = key_prefix
        self._objects = tuple(objects)
        self._limits = ConnectorLimits(
            batch_size=min(batch_size, COLLECTION_SIZE * COLLECTIONS_PER_COMPOSITE),
            requests_per_window=100,
            window_s=1.0,
            max_concurrent=max_concurrent,
            call_timeout_s=call_timeout_s,
        )
        self._fields: dict[str, str] = {}

    @property
    def system(self) -> str:
        """The configured system name (default ``"salesforce"``)."""
        return self._system

    @property
    def limits(self) -> ConnectorLimits:
        """Batches of up to 1,000 commands; a few calls at once (the org allows 25)."""
        return self._limits

    def objects(self) -> Sequence[str]:
        """The polled sObjects."""
        return self._objects

    @property
    def key_prefix(self) -> str:
        """The prefix of the project keys of the org's deals (``SF`` by default)."""
        return self._key_prefix

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # --- reconciliation (closeloop.ports.reconcile.FactSource) ------------------------------
    def fact_domains(self) -> Sequence[str]:
        """``customers`` (accounts), ``invoices`` (the deals' write-back) and ``charges``
        (the milestones of those deals)."""
        return facts.DOMAINS

    def read_facts(self, domain: str) -> Iterator[Sequence[Fact]]:
        """Pages of ``domain``'s facts, one SOQL query paged by the org (:mod:`.facts`).
        Raises ``ValueError`` at once for a domain not in :meth:`fact_domains`."""
        return facts.read_facts(
            self.client, domain, system=self._system, key_prefix=self._key_prefix
        )

    # --- change feed ------------------------------------------------------------------------
    def select_list(self, sobject: str) -> str:
        """Every field of ``sobject`` (from describe, once per object), and for an
        opportunity its account's fields and a subquery per child relationship of
        :data:`CHILDREN` the org has: its line items with their product's name, its
        milestones. Deleted children are left out (``queryAll`` reads deleted records)."""
        if sobject not in self._fields:
            described = self.client.describe(sobject)
            names = _field_names(described)
            if sobject in PARENTS:
                relationship, parent = PARENTS[sobject]
                parent_fields = _field_names(self.client.describe(parent))
                names += [f"{relationship}.{name}" for name in parent_fields]
            present = {r.get("relationshipName") for r in described.get("childRelationships", [])}
            for relationship, child, order in CHILDREN.get(sobject, ()):
                if relationship not in present:
                    continue
                child_fields = _field_names(self.client.describe(child))
                if "Product2Id" in child_fields:
                    child_fields.append("Product2.Name")
                kept = [item for item in order if item.split()[0] in child_fields]
                sort = f" ORDER BY {', '.join(kept)}" if kept else ""
                names.append(
                    f"(SELECT {', '.join(child_fields)} FROM {relationship}"
                    f" WHERE IsDeleted = false{sort})"
                )
            self._fields[sobject] = ", ".join(names)
        return self._fields[sobject]

    def read_changes(self, object_name: str, since: datetime | None) -> Iterator[Sequence[Change]]:
        """Pages of changes of ``object_name`` with ``since <= version < upper`` (see the
        module docstring), oldest first. An opportunity's version is the later of its own
        ``SystemModstamp`` and its account's: a fixed account is a new version of its deals."""
        if object_name not in self._objects:
            raise ValueError(f"{object_name!r} is not among the polled objects {self._objects}")
        select = self.select_list(object_name)
        upper = self.client.server_now()
        parent = PARENTS.get(object_name, ("", ""))[0]
        where = f"SystemModstamp < {soql_datetime(upper)}"
        if since is not None:
            changed = f"SystemModstamp >= {soql_datetime(since)}"
            if parent:
                changed = f"({changed} OR {parent}.SystemModstamp >= {soql_datetime(since)})"
            where = f"{changed} AND {where}"
        soql = f"SELECT {select} FROM {object_name} WHERE {where} ORDER BY SystemModstamp, Id"
        pages = self.client.query(soql, include_deleted=True)
        if not parent:  # in modification order already
            for page in pages:
                changes = [
                    c for c in (self._change(object_name, r, upper) for r in page["records"]) if c
                ]
                if changes:
                    yield changes
            return
        every = [
            c
            for page in pages
            for r in page["records"]
            if (c := self._change(object_name, r, upper))
        ]
        every.sort(key=lambda c: (c.modified_at, c.external_id))
        for start in range(0, len(every), 2000):
            yield every[start : start + 2000]

    def _change(self, object_name: str, record: dict[str, Any], upper: datetime) -> Change | None:
        """The change of ``record``, or ``None`` when it (or its parent) changed while the poll
        paged: the next poll reads it."""
        change = self.change_of(object_name, record)
        return None if change.modified_at and change.modified_at >= upper else change

    def change_of(self, object_name: str, record: dict[str, Any]) -> Change:
        """The change the feed makes of a queried ``record`` of ``object_name``: version and
        ``modified_at`` its ``SystemModstamp`` (for an object of :data:`PARENTS`, the later
        of its own and its parent's), payload :func:`plain`. Raises ``KeyError`` without
        ``Id`` or ``SystemModstamp``, ``ValueError`` for a malformed timestamp."""
        modified = parse_instant(record["SystemModstamp"])
        parent = PARENTS.get(object_name, ("", ""))[0]
        parent_record = record.get(parent) if parent else None
        if isinstance(parent_record, dict) and parent_record.get("SystemModstamp"):
            modified = max(modified, parse_instant(parent_record["SystemModstamp"]))
        return Change(
            system=self._system,
            object=object_name,
            external_id=record["Id"],
            version=modified.isoformat(),
            modified_at=modified,
            payload=plain(record),
        )

    def read_records(self, object_name: str, ids: Sequence[str]) -> list[Change]:
        """The current version of each record of ``ids`` (Salesforce ids) as the change feed
        makes it (:meth:`change_of`): ``SELECT <select_list> FROM <object> WHERE Id IN
        (...)`` through ``queryAll`` (a record deleted since comes with ``IsDeleted = true``,
        as polls see it), one query per 200 ids. Ids the org does not have are left out.
        Raises the client's errors (:mod:`.client`)."""
        select = self.select_list(object_name)
        unique = list(dict.fromkeys(ids))
        changes: list[Change] = []
        for start in range(0, len(unique), COLLECTION_SIZE):
            listed = ", ".join(soql_literal(i) for i in unique[start : start + COLLECTION_SIZE])
            soql = f"SELECT {select} FROM {object_name} WHERE Id IN ({listed})"
            for page in self.client.query(soql, include_deleted=True):
                changes.extend(self.change_of(object_name, r) for r in page["records"])
        return changes

    # --- writes -----------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> Sequence[Outcome]:
        """Run ``commands`` in Collections (Composite when there are several); outcomes in
        order. Raises the first call's error when no call succeeded."""
        outcomes: list[Outcome | None] = [None] * len(commands)
        groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
        for position, command in enumerate(commands):
            try:
                key, record = _record(command)
            except (KeyError, TypeError, ValueError) as exc:
                outcomes[position] = Permanent(_VALIDATION, f"malformed command: {exc}")
                continue
            groups.setdefault(key, []).append((position, record))
        chunks = [
            (key, items[start : start + COLLECTION_SIZE])
            for key, items in groups.items()
            for start in range(0, len(items), COLLECTION_SIZE)
        ]
        failures: list[Exception] = []
        for start in range(0, len(chunks), COLLECTIONS_PER_COMPOSITE):
            calls = chunks[start : start + COLLECTIONS_PER_COMPOSITE]
            try:
                answers = self._send(calls)
            except (TransientError, AmbiguousError) as exc:
                failures.append(exc)
                for _, items in calls:
                    for position, _ in items:
                        outcomes[position] = _call_outcome(exc)
                continue
            for (_, items), answer in zip(calls, answers, strict=True):
                for (position, record), result in zip(items, answer, strict=True):
                    outcomes[position] = _outcome(record, result)
        if failures and len(failures) * COLLECTIONS_PER_COMPOSITE >= len(chunks):
            raise failures[0]
        return [o or Permanent(_VALIDATION, "no result") for o in outcomes]

    def _send(self, calls: list[tuple[tuple[str, str, str], list[Any]]]) -> list[list[Any]]:
        """One API request for up to five Collections; their per-record results."""
        requests = []
        for (operation, sobject, external), items in calls:
            method, url = _collection_endpoint(operation, sobject, external)
            body = {"allOrNone": False, "records": [record for _, record in items]}
            requests.append((method, url, body))
        if len(requests) == 1:
            method, url, body = requests[0]
            return [self._collection(method, url, body, len(calls[0][1]))]
        composite = {
            "allOrNone": False,
            "compositeRequest": [
                {"method": method, "url": f"{self._path}/{url}", "referenceId": f"c{i}", "body": b}
                for i, (method, url, b) in enumerate(requests)
            ],
        }
        answer = self.client.request("POST", "composite", body=composite)
        results = []
        for sub, (_, items) in zip(answer["compositeResponse"], calls, strict=True):
            if sub["httpStatusCode"] >= 400:
                results.append([_sub_failure(sub)] * len(items))
            else:
                results.append(sub["body"])
        return results

    @property
    def _path(self) -> str:
        return f"/services/data/v{self.client.credentials.api_version}"

    def _collection(self, method: str, url: str, body: Any, count: int) -> list[Any]:
        try:
            answer = self.client.request(method, url, body=body)
        except SalesforceApiError as exc:  # the whole Collection refused
            return [{"success": False, "errors": exc.errors}] * count
        return list(answer)

    # --- lookups ----------------------------------------------------------------------------
    def find(self, idempotency_keys: Sequence[str]) -> dict[str, Applied]:
        """Records stamped with any of ``idempotency_keys`` (one query per object and 200
        keys), keyed by idempotency key."""
        by_object: dict[str, list[str]] = {}
        for key in idempotency_keys:
            parts = key.split(":", 2)
            if len(parts) == 3 and parts[0] == self._system:
                try:
                    sobject = key_sobject(parts[1], parts[2])
                except KeyError:
                    continue
                by_object.setdefault(sobject, []).append(key)
        found: dict[str, Applied] = {}
        for sobject, keys in by_object.items():
            for start in range(0, len(keys), COLLECTION_SIZE):
                chunk = keys[start : start + COLLECTION_SIZE]
                stamps = {sync_stamp(k): k for k in chunk}
                values = ", ".join(soql_literal(s) for s in stamps)
                soql = (
                    f"SELECT Id, {SYNC_KEY_FIELD} FROM {sobject} "
                    f"WHERE {SYNC_KEY_FIELD} IN ({values})"
                )
                for page in self.client.query(soql):
                    for record in page["records"]:
                        hit = stamps.get(record[SYNC_KEY_FIELD])
                        if hit is not None:
                            found[hit] = Applied({"id": record["Id"]})
        return found


def _field_names(describe: dict[str, Any]) -> list[str]:
    return [f["name"] for f in describe["fields"] if f["type"] not in _SKIPPED_TYPES]


def _record(command: Command) -> tuple[tuple[str, str, str], dict[str, Any]]:
    """The Collections group and record of a command; raises on a malformed payload."""
    operation, payload = native(command)
    sobject = str(payload["object"])
    fields = dict(payload.get("fields") or {})
    record: dict[str, Any] = {"attributes": {"type": sobject}, **fields}
    record[SYNC_KEY_FIELD] = sync_stamp(command.idempotency_key)
    if operation == "update":
        record["Id"] = str(payload["id"])
        return ("update", sobject, ""), record
    if operation == "upsert":
        external = str(payload.get("external_id_field") or DEFAULT_EXTERNAL_ID)
        record[external] = str(payload["external_id"])
        return ("upsert", sobject, external), record
    raise ValueError(f"unknown operation {command.operation!r} (update, upsert)")


def _collection_endpoint(operation: str, sobject: str, external: str) -> tuple[str, str]:
    if operation == "update":
        return "PATCH", "composite/sobjects"
    return "PATCH", f"composite/sobjects/{sobject}/{external}"


def _sub_failure(sub: dict[str, Any]) -> dict[str, Any]:
    body = sub.get("body")
    errors = body if isinstance(body, list) else [{"errorCode": "", "message": str(body)}]
    status = int(sub["httpStatusCode"])
    if status >= 500:
        errors = [{**errors[0], "errorCode": "SERVER_UNAVAILABLE"}]
    return {"success": False, "errors": errors}


def _outcome(record: dict[str, Any], result: dict[str, Any]) -> Outcome:
    if result.get("success"):
        answer = {"id": result.get("id")}
        if "created" in result:
            answer["created"] = result["created"]
        return Applied(answer)
    errors = result.get("errors") or [{}]
    first = errors[0]
    code = str(first.get("statusCode") or first.get("errorCode") or "")
    if code in _TRANSIENT_CODES:
        return Transient(f"Salesforce {code}: {first.get('message')}")
    target = record.get("Id") or record["attributes"]["type"]
    fields = ", ".join(first.get("fields") or [])
    detail = f" (fields: {fields})" if fields else ""
    return Permanent(
        _ERROR_CLASSES.get(code, _VALIDATION),
        f"Salesforce refused {record['attributes']['type']} {target}: {code}: "
        f"{first.get('message')}{detail}",
    )


def _call_outcome(exc: Exception) -> Outcome:
    if isinstance(exc, AmbiguousError):
        return Ambiguous(str(exc))
    retry_after = exc.retry_after_s if isinstance(exc, TransientError) else None
    return Transient(str(exc), retry_after)
