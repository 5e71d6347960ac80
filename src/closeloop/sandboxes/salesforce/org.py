"""The sandbox org's data: records of each sObject, kept in memory and written through to
SQLite, with Salesforce's write rules, the SOQL subset, query cursors and the daily API
request allocation.

All methods are called under the org's lock (:attr:`Org.lock`); :meth:`Org.transaction`
makes a group of writes all-or-nothing (``allOrNone``) and commits them to SQLite at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from closeloop.sandboxes.salesforce import soql
from closeloop.sandboxes.salesforce.derived import derive
from closeloop.sandboxes.salesforce.records import (
    SalesforceError,
    clean,
    id18,
    is_id,
    make_id,
    not_found,
    require,
    timestamp,
)
from closeloop.sandboxes.salesforce.schema import STAGES, RollUp, SObjectDef

SEED_ORDER = (  # custom objects follow, in the schema's order
    "User",
    "Account",
    "Contact",
    "Product2",
    "Pricebook2",
    "PricebookEntry",
    "Opportunity",
    "OpportunityLineItem",
)
_STAGE = {s[0]: s for s in STAGES}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, sobject TEXT NOT NULL,
                                    deleted INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class OrgSettings:
    """What makes the sandbox org like a real one.

    ``daily_api_requests``: the org's 24-hour API request allocation (Enterprise Edition: 100,000
    plus 1,000 per user licence; Developer Edition: 15,000). ``max_concurrent``: requests in
    flight at once before ``REQUEST_LIMIT_EXCEEDED``. ``session_timeout_s``: an access token's
    idle lifetime (Setup > Session Settings; default two hours).
    """

    organization_id: str = "00D5g000004SbXQEA0"
    instance_url: str = "https://127.0.0.1"
    api_version: str = "62.0"
    client_id: str = "closeloop-sandbox"
    client_secret: str = "sandbox-secret"  # noqa: S105 - a local sandbox's known secret
    username: str = "integration@closeloop.example"
    password: str = "sandbox-password"  # noqa: S105 - a local sandbox's known password
    daily_api_requests: int = 100_000
    max_concurrent: int = 25
    session_timeout_s: float = 7200.0


@dataclass
class Org:
    """The org's records and counters; ``clock`` gives aware UTC datetimes.

    ``on_write(sobject, record)`` is called after each committed create or update (the
    outbound-message rules hang off it).
    """

    path: Path
    schema: dict[str, SObjectDef]
    settings: OrgSettings = field(default_factory=OrgSettings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_write: Callable[[str, dict[str, Any]], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.live: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self.deleted: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        for rid, sobject, deleted, data in self._db.execute("SELECT * FROM records"):
            (self.deleted if deleted else self.live)[sobject][rid] = json.loads(data)
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self._sequence = int(meta.get("sequence", "0"))
        self._api_day, self._api_used = meta.get("api_day", ""), int(meta.get("api_used", "0"))
        self._levels: list[dict[str, tuple[str, dict[str, Any] | None, bool]]] = []
        self._written: list[tuple[str, dict[str, Any]]] = []
        self.integration_user = self._ensure_user()

    # --- persistence -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are all-or-nothing: an exception restores the records as they were
        and re-raises; success of the outermost transaction commits to SQLite in one go. A
        nested transaction is a savepoint: its failure undoes only its own writes."""
        self._levels.append({})
        written = len(self._written)
        try:
            yield
        except BaseException:
            self._restore(self._levels.pop())
            del self._written[written:]
            raise
        level = self._levels.pop()
        if self._levels:  # a savepoint: the enclosing level now answers for these records
            for rid, before in level.items():
                self._levels[-1].setdefault(rid, before)
            return
        rows = []
        for rid, (sobject, _, _) in level.items():
            record = self.live[sobject].get(rid)
            deleted = record is None
            record = record or self.deleted[sobject][rid]
            rows.append((rid, sobject, int(deleted), json.dumps(record)))
        with self._sql() as db:
            db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", rows)
            self._save_meta(db)
        written_now, self._written = self._written, []
        if self.on_write is not None:
            for sobject, record in written_now:
                self.on_write(sobject, record)

    def _restore(self, level: dict[str, tuple[str, dict[str, Any] | None, bool]]) -> None:
        for rid, (sobject, before, was_deleted) in level.items():
            self.live[sobject].pop(rid, None)
            self.deleted[sobject].pop(rid, None)
            if before is not None:
                (self.deleted if was_deleted else self.live)[sobject][rid] = before

    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _save_meta(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [
                ("sequence", str(self._sequence)),
                ("api_day", self._api_day),
                ("api_used", str(self._api_used)),
            ],
        )

    def _touch(self, sobject: str, rid: str) -> None:
        assert self._levels, "writes happen inside Org.transaction()"
        if rid not in self._levels[-1]:
            before = self.live[sobject].get(rid)
            was_deleted = before is None and rid in self.deleted[sobject]
            before = before or self.deleted[sobject].get(rid)
            self._levels[-1][rid] = (sobject, dict(before) if before else None, was_deleted)

    # --- API allocation ----------------------------------------------------------------------
    def count_request(self) -> None:
        """Count one API request against the daily allocation; raises
        ``REQUEST_LIMIT_EXCEEDED`` (403) when it is used up."""
        day = self.clock().date().isoformat()
        if day != self._api_day:
            self._api_day, self._api_used = day, 0
        if self._api_used >= self.settings.daily_api_requests:
            raise SalesforceError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self._api_used += 1
        if self._api_used % 50 == 0:
            with self._sql() as db:
                self._save_meta(db)

    def api_usage(self) -> tuple[int, int]:
        """``(used, allocation)`` today."""
        return self._api_used, self.settings.daily_api_requests

    def set_api_usage(self, used: int) -> None:
        """Set today's count (tests and demos start an org close to its limit)."""
        self._api_day, self._api_used = self.clock().date().isoformat(), used
        with self._sql() as db:
            self._save_meta(db)

    # --- records ---------------------------------------------------------------------------
    def sobject(self, name: str) -> SObjectDef:
        """The sObject called ``name`` (any case); raises ``NOT_FOUND``."""
        found = self.schema.get(name) or next(
            (s for s in self.schema.values() if s.name.lower() == name.lower()), None
        )
        if found is None:
            raise SalesforceError(
                404, "NOT_FOUND", f"The requested resource does not exist: {name}"
            )
        return found

    def get(self, sobject: str, rid: str) -> dict[str, Any]:
        """One live record; raises ``NOT_FOUND``, ``ENTITY_IS_DELETED`` or ``MALFORMED_ID``."""
        self._check_id(sobject, rid)
        rid = id18(rid)
        record = self.live[sobject].get(rid)
        if record is None:
            if rid in self.deleted[sobject]:
                raise SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise not_found()
        return record

    def sobject_of(self, rid: str) -> str:
        """The sObject a record id belongs to, by its key prefix; raises ``MALFORMED_ID``."""
        for name, spec in self.schema.items():
            if is_id(rid) and rid.startswith(spec.key_prefix):
                return name
        raise SalesforceError(400, "MALFORMED_ID", f"malformed id {rid}")

    def _check_id(self, sobject: str, rid: str) -> None:
        if not is_id(rid) or not rid.startswith(self.schema[sobject].key_prefix):
            raise SalesforceError(
                404 if is_id(rid) else 400,
                "MALFORMED_ID" if not is_id(rid) else "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {rid}"
                if is_id(rid)
                else f"{sobject} ID: id value of incorrect type: {rid}",
            )

    def create(self, sobject: str, values: dict[str, Any], seed: bool = False) -> str:
        """Insert a record; returns its new id. ``seed`` keeps given ids and audit fields (as
        "Set Audit Fields upon Record Creation" allows). Raises :class:`SalesforceError`."""
        spec = self.sobject(sobject)
        given = dict(values)
        audit = {k: given.pop(k) for k in _AUDIT_FIELDS if seed and k in given}
        record = clean(spec, given, creating=True)
        rid = str(audit.pop("Id", "")) or self._new_id(spec)
        if seed:
            self._check_id(spec.name, rid)
            rid = id18(rid)
            if rid in self.live[spec.name]:
                raise SalesforceError(400, "DUPLICATE_VALUE", f"duplicate value found: Id {rid}")
        now = timestamp(self.clock())
        user = self.integration_user if spec.name != "User" or self.live["User"] else rid
        record.update(
            Id=rid,
            IsDeleted=False,
            CreatedDate=now,
            CreatedById=user,
            LastModifiedDate=now,
            LastModifiedById=user,
            SystemModstamp=now,
        )
        record.update({k: v for k, v in audit.items() if v is not None})
        self._defaults(spec, record)
        if spec.custom and record.get("Name") is None and "Name" in spec.fields:
            record["Name"] = rid  # a custom object's record created without a name
        record.update(self._summaries(spec, rid))
        require(spec, record)
        derive(self.live, spec, record, None)
        self._check_references(spec, record)
        self._check_unique(spec, record)
        self._touch(spec.name, rid)
        self.live[spec.name][rid] = record
        self._after_write(spec, record, seed)
        return rid

    def update(self, sobject: str, rid: str, values: dict[str, Any]) -> dict[str, Any]:
        """Change fields of a live record; returns the record. Raises :class:`SalesforceError`."""
        spec = self.sobject(sobject)
        current = self.get(spec.name, rid)
        changes = clean(spec, {k: v for k, v in values.items() if k != "Id"}, creating=False)
        record = {**current, **changes}
        now = timestamp(self.clock())
        record.update(
            LastModifiedDate=now, LastModifiedById=self.integration_user, SystemModstamp=now
        )
        derive(self.live, spec, record, current)
        self._check_references(spec, record)
        self._check_unique(spec, record)
        self._touch(spec.name, record["Id"])
        self.live[spec.name][record["Id"]] = record
        self._after_write(spec, record, False)
        return record

    def upsert(
        self, sobject: str, field_name: str, value: str, values: dict[str, Any]
    ) -> tuple[str, bool]:
        """Update the record whose external id ``field_name`` is ``value``, or create it;
        returns ``(id, created)``. Raises ``NOT_FOUND`` (not an external id field),
        ``MULTIPLE_CHOICES`` (300) when several records match."""
        spec = self.sobject(sobject)
        ext = spec.field(field_name)
        if ext is None or ext not in spec.external_ids():
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if ext.type == "id":
            if value and value != "null":
                return self.update(spec.name, value, values)["Id"], False
            return self.create(spec.name, {k: v for k, v in values.items() if k != "Id"}), True
        body = {k: v for k, v in values.items() if k.lower() != ext.name.lower()}
        if ext.name in values and values[ext.name] not in (None, value):
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"The value of {ext.name} in the body ({values[ext.name]}) does not match the "
                f"URL ({value})",
                [ext.name],
            )
        matches = self.find_by(spec, ext.name, value)
        if len(matches) > 1:
            raise SalesforceError(
                300, "MULTIPLE_CHOICES", f"Multiple records match {ext.name} = {value}: {matches}"
            )
        if matches:
            return self.update(spec.name, matches[0], body)["Id"], False
        return self.create(spec.name, {**body, ext.name: value}), True

    def delete(self, sobject: str, rid: str, roll_up: bool = True) -> None:
        """Move a record (and its cascade-deleted children) to the recycle bin; its masters'
        roll-ups are recalculated (not when the master goes too: ``roll_up`` false)."""
        spec = self.sobject(sobject)
        record = dict(self.get(spec.name, rid))
        for relation in spec.children.values():
            if not relation.cascade_delete:
                continue
            children = self.live[relation.child].items()
            for child_id in [i for i, r in children if r.get(relation.field) == record["Id"]]:
                self.delete(relation.child, child_id, roll_up=False)
        now = timestamp(self.clock())
        record.update(IsDeleted=True, SystemModstamp=now, LastModifiedDate=now)
        self._touch(spec.name, record["Id"])
        del self.live[spec.name][record["Id"]]
        self.deleted[spec.name][record["Id"]] = record
        if roll_up:
            self._roll_up_masters(spec, record)

    def find_by(self, spec: SObjectDef, field_name: str, value: Any) -> list[str]:
        """Ids of live records whose ``field_name`` equals ``value`` (text ignores case unless
        the field is case sensitive)."""
        fdef = spec.fields[field_name]
        if fdef.type in ("string", "email") and not fdef.case_sensitive:
            lowered = str(value).lower()
            return [
                i
                for i, r in self.live[spec.name].items()
                if isinstance(r.get(field_name), str) and r[field_name].lower() == lowered
            ]
        return [i for i, r in self.live[spec.name].items() if r.get(field_name) == value]

    def _new_id(self, spec: SObjectDef) -> str:
        self._sequence += 1
        return make_id(spec.key_prefix, self._sequence)

    def _ensure_user(self) -> str:
        for rid, user in self.live["User"].items():
            if user.get("Username") == self.settings.username:
                return rid
        with self.transaction():
            self._sequence += 1
            rid = make_id("005", self._sequence)
            return self.create(
                "User",
                {
                    "Id": rid,
                    "Username": self.settings.username,
                    "LastName": "Integration",
                    "FirstName": "closeloop",
                    "Email": self.settings.username,
                    "Alias": "clint",
                    "IsActive": True,
                },
                seed=True,
            )

    def _defaults(self, spec: SObjectDef, record: dict[str, Any]) -> None:
        for fdef in spec.fields.values():
            if fdef.type == "boolean" and record.get(fdef.name) is None:
                record[fdef.name] = fdef.name in ("IsActive",)
            if fdef.default_value is not None and fdef.name not in record:
                record[fdef.name] = fdef.default_value  # a picklist's default value
        if "OwnerId" in spec.fields and not record.get("OwnerId"):
            record["OwnerId"] = self.integration_user
        if "CurrencyIsoCode" in spec.fields and not record.get("CurrencyIsoCode"):
            masters = [
                self.live[f.reference_to[0]].get(record.get(f.name) or "") for f in spec.masters()
            ]
            inherited = next(
                (m["CurrencyIsoCode"] for m in masters if m and m.get("CurrencyIsoCode")), None
            )
            record["CurrencyIsoCode"] = inherited or "USD"

    def _check_references(self, spec: SObjectDef, record: dict[str, Any]) -> None:
        for fdef in spec.fields.values():
            target = fdef.reference_to[0] if fdef.reference_to else None
            value = record.get(fdef.name)
            if target is None or value is None or fdef.name in _AUDIT_FIELDS:
                continue
            if target in self.live and value not in self.live[target]:
                raise SalesforceError(
                    400,
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"invalid cross reference id: {fdef.name} = {value}",
                    [fdef.name],
                )

    def _check_unique(self, spec: SObjectDef, record: dict[str, Any]) -> None:
        for fdef in spec.fields.values():
            value = record.get(fdef.name)
            if not fdef.unique or value is None:
                continue
            others = [i for i in self.find_by(spec, fdef.name, value) if i != record["Id"]]
            if others:
                raise SalesforceError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {fdef.name} duplicates value on record with id: "
                    f"{others[0]}",
                    [fdef.name],
                )

    def _after_write(self, spec: SObjectDef, record: dict[str, Any], seed: bool) -> None:
        self._roll_up_masters(spec, record, seed)
        if not seed:
            self._written.append((spec.name, record))

    def _roll_up_masters(
        self, spec: SObjectDef, record: dict[str, Any], seed: bool = False
    ) -> None:
        """After a write of ``record``: recalculate what its masters sum of it (an
        opportunity's products; roll-up summary fields over a detail object)."""
        if spec.name == "OpportunityLineItem":
            self._roll_up(self.schema["Opportunity"], record.get("OpportunityId"), seed)
            return
        for fdef in spec.masters():
            master = self.schema[fdef.reference_to[0]]
            if any(r.child == spec.name and r.via == fdef.name for r in master.roll_ups.values()):
                self._roll_up(master, record.get(fdef.name), seed)

    def _roll_up(self, master: SObjectDef, master_id: str | None, seed: bool = False) -> None:
        """Recalculate a master record's sums of its children: an opportunity with products
        has the sum of its lines' TotalPrice as Amount, and roll-up summary fields are
        recalculated. As in Salesforce (Apex Developer Guide, "Triggers and Order of
        Execution": a detail's save updates the roll-up summaries of its parent, which is then
        saved itself), the master's ``SystemModstamp`` and ``LastModifiedDate`` change on every
        write of a detail, whether or not a sum did."""
        current = self.live[master.name].get(master_id or "")
        if current is None:
            return
        updated = {**current, **self._summaries(master, current["Id"])}
        if master.name == "Opportunity":
            lines = [
                r
                for r in self.live["OpportunityLineItem"].values()
                if r["OpportunityId"] == master_id
            ]
            total = sum((Decimal(str(r["TotalPrice"])) for r in lines), Decimal(0))
            updated["Amount"] = float(total) if lines else current.get("Amount")
            updated["HasOpportunityLineItem"] = bool(lines)
        if not seed:  # a seed keeps the audit fields it was given
            now = timestamp(self.clock())
            updated.update(SystemModstamp=now, LastModifiedDate=now)
        derive(self.live, master, updated, current)
        self._touch(master.name, current["Id"])
        self.live[master.name][current["Id"]] = updated
        if not seed:
            self._written.append((master.name, updated))

    def _summaries(self, master: SObjectDef, master_id: str) -> dict[str, Any]:
        """The values of ``master``'s roll-up summary fields for record ``master_id``: a count
        or sum of no records is 0, a minimum or maximum of none is null."""
        values: dict[str, Any] = {}
        for roll_up in master.roll_ups.values():
            children = [
                r
                for r in self.live[roll_up.child].values()
                if r.get(roll_up.via) == master_id and soql.matches(roll_up.where, r)
            ]
            values[roll_up.field] = _summarize(
                roll_up, master.fields[roll_up.field].scale, children
            )
        return values

    # --- seeding ----------------------------------------------------------------------------
    def seed(self, data: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """Load records given in REST API shape (``{"Account": [...], ...}``) in one
        transaction, parents before children. Records keep given ``Id`` and audit fields.
        Raises :class:`SalesforceError` naming the object and position of a bad record; then
        nothing is loaded."""
        unknown = [name for name in data if name not in self.schema]
        if unknown:
            raise SalesforceError(400, "INVALID_TYPE", f"unknown sObject types: {unknown}")
        counts = {}
        order = [*SEED_ORDER, *(name for name in self.schema if name not in SEED_ORDER)]
        with self.transaction():
            for name in order:
                for position, record in enumerate(data.get(name, [])):
                    try:
                        self.create(name, record, seed=True)
                    except SalesforceError as exc:
                        exc.message = f"{name}[{position}]: {exc.message}"
                        raise
                counts[name] = len(data.get(name, []))
        return {k: v for k, v in counts.items() if v}

    def record_body(self, spec: SObjectDef, row: dict[str, Any]) -> dict[str, Any]:
        """A record as ``GET /sobjects/<object>/<id>`` returns it: every field, nulls too."""
        body: dict[str, Any] = {
            "attributes": attributes(spec.name, row["Id"], self.settings.api_version)
        }
        body.update({name: row.get(name) for name in spec.fields})
        return body


_AUDIT_FIELDS = (
    "Id",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
)


def _summarize(roll_up: RollUp, scale: int, children: list[dict[str, Any]]) -> Any:
    if roll_up.operation == "count":
        return float(len(children))
    values = [r.get(roll_up.summarized or "") for r in children]
    present = [v for v in values if v is not None]
    if roll_up.operation == "sum":
        total = sum((Decimal(str(v)) for v in present), Decimal(0))
        return float(round(total, scale))
    if not present:
        return None
    return min(present) if roll_up.operation == "min" else max(present)


def attributes(sobject: str, rid: str, version: str) -> dict[str, str]:
    """A record's ``attributes``: its type and REST URL."""
    return {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{rid}"}
