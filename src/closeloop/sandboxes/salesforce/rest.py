"""The REST API's resources under ``/services/data/vNN.N/``, as a router from (method, path,
query parameters, body) to (status, JSON body), so that Composite subrequests run through
the same code as top-level calls.

Resources (*REST API Developer Guide*): ``sobjects`` (global describe), ``sobjects/<o>``
(basic info, create), ``sobjects/<o>/describe``, ``sobjects/<o>/<id>`` (read, update,
delete), ``sobjects/<o>/<externalIdField>/<value>`` (read, upsert, delete), ``query`` and
``queryAll`` (with ``nextRecordsUrl`` locators), ``composite/sobjects`` (Collections: up to
200 records), ``composite`` (up to 25 subrequests, of which up to 5 Collections or queries,
with ``@{reference.path}`` references), ``limits``, ``limits/recordCount``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from closeloop.sandboxes.salesforce.org import Org
from closeloop.sandboxes.salesforce.query import Queries
from closeloop.sandboxes.salesforce.records import SalesforceError, id18, not_found

MAX_COLLECTION = 200
MAX_COMPOSITE = 25
MAX_COMPOSITE_HEAVY = 5  #: Collections and query subrequests in one Composite request
MAX_RETRIEVE = 2000
_VERSIONED = re.compile(r"^/services/data/v\d+\.\d+/")
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")
_ROLLED_BACK = (
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
)

Answer = tuple[int, Any]


@dataclass
class Rest:
    """Routes REST calls to ``org``; call :meth:`handle` under ``org.lock``."""

    org: Org
    queries: Queries

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Answer:
        """Answer one call; ``path`` is relative to ``/services/data/vNN.N/``. Salesforce
        errors become their status and error body."""
        try:
            return self._route(method, [p for p in path.split("/") if p], params, body)
        except SalesforceError as exc:
            return exc.status, exc.body()

    def _route(self, method: str, parts: list[str], params: dict[str, str], body: Any) -> Answer:
        head = parts[0] if parts else ""
        if not parts and method == "GET":
            return 200, self._resources()
        if head == "limits":
            return self._limits(parts[1:], params)
        if head in ("query", "queryAll") and method == "GET":
            if len(parts) == 2:
                return 200, self.queries.query_more(parts[1])
            if "q" not in params:
                raise SalesforceError(400, "MALFORMED_QUERY", "A query string (q) is required")
            return 200, self.queries.query(params["q"], include_deleted=head == "queryAll")
        if head == "sobjects":
            return self._sobjects(method, parts[1:], params, body)
        if parts[:2] == ["composite", "sobjects"]:
            return self._collections(method, parts[2:], params, body)
        if parts == ["composite"] and method == "POST":
            return self._composite(body)
        raise not_found()

    def _resources(self) -> dict[str, str]:
        base = f"/services/data/v{self.org.settings.api_version}"
        names = ("sobjects", "query", "queryAll", "composite", "limits")
        return {name: f"{base}/{name}" for name in names}

    def _limits(self, rest: list[str], params: dict[str, str]) -> Answer:
        if rest == ["recordCount"]:
            names = [n for n in params.get("sObjects", "").split(",") if n]
            chosen = [self.org.sobject(n).name for n in names] or list(self.org.schema)
            counts = [{"count": len(self.org.live[n]), "name": n} for n in chosen]
            return 200, {"sObjects": [c for c in counts if c["count"]]}
        if rest:
            raise not_found()
        used, allocation = self.org.api_usage()
        concurrency = self.org.settings.max_concurrent
        return 200, {
            "DailyApiRequests": {"Max": allocation, "Remaining": max(0, allocation - used)},
            "ConcurrentPerOrgLongTxn": {"Max": concurrency, "Remaining": concurrency},
        }

    # --- sObject resources ----------------------------------------------------------------
    def _sobjects(self, method: str, rest: list[str], params: dict[str, str], body: Any) -> Answer:
        version = self.org.settings.api_version
        if not rest and method == "GET":
            return 200, {
                "encoding": "UTF-8",
                "maxBatchSize": MAX_COLLECTION,
                "sobjects": [
                    {
                        k: v
                        for k, v in s.describe(version).items()
                        if k not in ("fields", "childRelationships")
                    }
                    for s in self.org.schema.values()
                ],
            }
        if not rest:
            raise not_found()
        spec = self.org.sobject(rest[0])
        if len(rest) == 1:
            if method == "GET":
                described = spec.describe(version)
                info = {k: v for k, v in described.items() if k != "fields"}
                return 200, {"objectDescribe": info, "recentItems": []}
            if method == "POST":
                with self.org.transaction():
                    rid = self.org.create(spec.name, _fields(body))
                return 201, {"id": rid, "success": True, "errors": []}
        if len(rest) == 2 and rest[1] == "describe" and method == "GET":
            return 200, spec.describe(version)
        if len(rest) == 2:
            return self._record(method, spec.name, rest[1], params, body)
        if len(rest) == 3:
            return self._by_external_id(method, spec.name, rest[1], rest[2], params, body)
        raise not_found()

    def _record(
        self, method: str, sobject: str, rid: str, params: dict[str, str], body: Any
    ) -> Answer:
        if method == "GET":
            return 200, self._body(sobject, self.org.get(sobject, rid), params.get("fields"))
        with self.org.transaction():
            if method == "PATCH":
                self.org.update(sobject, rid, _fields(body))
                return 204, None
            if method == "DELETE":
                self.org.delete(sobject, rid)
                return 204, None
        raise not_found()

    def _by_external_id(
        self,
        method: str,
        sobject: str,
        field_name: str,
        value: str,
        params: dict[str, str],
        body: Any,
    ) -> Answer:
        spec = self.org.sobject(sobject)
        if method == "PATCH":
            with self.org.transaction():
                rid, created = self.org.upsert(sobject, field_name, value, _fields(body))
            answer = {"id": rid, "success": True, "errors": [], "created": created}
            return (201 if created else 200), answer
        fdef = spec.field(field_name)
        if fdef is None or fdef not in spec.external_ids():
            raise not_found()
        matches = self.org.find_by(spec, fdef.name, value)
        if not matches:
            raise not_found()
        if method == "GET":
            record = self.org.live[spec.name][matches[0]]
            return 200, self._body(spec.name, record, params.get("fields"))
        if method == "DELETE":
            with self.org.transaction():
                self.org.delete(spec.name, matches[0])
            return 204, None
        raise not_found()

    def _body(self, sobject: str, record: dict[str, Any], fields: str | None) -> dict[str, Any]:
        spec = self.org.schema[sobject]
        body = self.org.record_body(spec, record)
        if fields:
            wanted = {"attributes"} | {
                (spec.field(f.strip()) or _unknown(spec.name, f.strip())).name
                for f in fields.split(",")
            }
            body = {k: v for k, v in body.items() if k in wanted}
        return body

    # --- sObject Collections ----------------------------------------------------------------
    def _collections(
        self, method: str, rest: list[str], params: dict[str, str], body: Any
    ) -> Answer:
        if method == "DELETE" and not rest:
            ids = [i for i in params.get("ids", "").split(",") if i]
            all_or_none = params.get("allOrNone", "false").lower() == "true"
            return 200, self._each(ids, all_or_none, self._delete_one)
        if method == "GET" and len(rest) == 1:
            return self._retrieve(rest[0], params)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "The body needs a records array")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into "
                "this call",
            )
        all_or_none = bool(body.get("allOrNone", False))
        if method == "POST" and not rest:
            return 200, self._each(records, all_or_none, self._create_one)
        if method == "PATCH" and not rest:
            return 200, self._each(records, all_or_none, self._update_one)
        if method == "PATCH" and len(rest) == 2:
            sobject, field_name = self.org.sobject(rest[0]).name, rest[1]
            return 200, self._each(
                records, all_or_none, lambda r: self._upsert_one(sobject, field_name, r)
            )
        raise not_found()

    def _each(
        self, items: list[Any], all_or_none: bool, one: Callable[[Any], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Apply ``one`` to each item, each in a savepoint; with ``all_or_none`` any failure
        rolls every item back."""
        results: list[dict[str, Any]] = []
        failed = False
        try:
            with self.org.transaction():
                for item in items:
                    try:
                        with self.org.transaction():
                            results.append({**one(item), "success": True, "errors": []})
                    except SalesforceError as exc:
                        failed = True
                        results.append({"success": False, "errors": [exc.collection_error()]})
                if failed and all_or_none:
                    raise _RollBack
        except _RollBack:
            code, message = _ROLLED_BACK
            return [
                r
                if not r["success"]
                else {
                    "id": r.get("id"),
                    "success": False,
                    "errors": [{"statusCode": code, "message": message, "fields": []}],
                }
                for r in results
            ]
        return results

    def _create_one(self, record: Any) -> dict[str, Any]:
        return {"id": self.org.create(_type(record), _fields(record))}

    def _update_one(self, record: Any) -> dict[str, Any]:
        rid = _fields(record).get("Id")
        if not rid:
            raise SalesforceError(400, "MISSING_ARGUMENT", "Id not specified in an update call")
        self.org.update(_type(record), str(rid), _fields(record))
        return {"id": self.org.get(_type(record), str(rid))["Id"]}

    def _upsert_one(self, sobject: str, field_name: str, record: Any) -> dict[str, Any]:
        values = _fields(record)
        spec = self.org.sobject(sobject)
        fdef = spec.field(field_name)
        value = values.get(fdef.name if fdef else field_name)
        if value is None and (fdef is None or fdef.type != "id"):
            raise SalesforceError(
                400, "MISSING_ARGUMENT", f"{field_name} not specified", [field_name]
            )
        rid, created = self.org.upsert(sobject, field_name, str(value or ""), values)
        return {"id": rid, "created": created}

    def _delete_one(self, rid: Any) -> dict[str, Any]:
        rid = str(rid)
        sobject = self.org.sobject_of(rid)
        self.org.delete(sobject, rid)
        return {"id": id18(rid)}

    def _retrieve(self, sobject: str, params: dict[str, str]) -> Answer:
        spec = self.org.sobject(sobject)
        ids = [i for i in params.get("ids", "").split(",") if i]
        if len(ids) > MAX_RETRIEVE:
            raise SalesforceError(400, "EXCEEDED_ID_LIMIT", f"more than {MAX_RETRIEVE} ids")
        found: list[dict[str, Any] | None] = []
        for rid in ids:
            try:
                record = self.org.get(spec.name, rid)
            except SalesforceError:
                found.append(None)
                continue
            found.append(self._body(spec.name, record, params.get("fields")))
        return 200, found

    # --- Composite ----------------------------------------------------------------------------
    def _composite(self, body: Any) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "The body needs a compositeRequest")
        subrequests = body["compositeRequest"]
        if len(subrequests) > MAX_COMPOSITE:
            raise SalesforceError(
                400, "LIMIT_EXCEEDED", f"A composite request can hold {MAX_COMPOSITE} subrequests"
            )
        heavy = [s for s in subrequests if _heavy(str(s.get("url", "")))]
        if len(heavy) > MAX_COMPOSITE_HEAVY:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"At most {MAX_COMPOSITE_HEAVY} subrequests may be sObject Collections or queries",
            )
        all_or_none = bool(body.get("allOrNone", False))
        results: list[dict[str, Any]] = []
        done: dict[str, Any] = {}
        try:
            with self.org.transaction():
                for sub in subrequests:
                    results.append(self._subrequest(sub, done))
                    if all_or_none and results[-1]["httpStatusCode"] >= 400:
                        raise _RollBack
        except _RollBack:
            failed = len(results) - 1
            halted = {
                "body": [
                    {
                        "errorCode": "PROCESSING_HALTED",
                        "message": "The transaction was rolled back since another operation "
                        "in the same transaction failed.",
                    }
                ],
                "httpHeaders": {},
                "httpStatusCode": 400,
            }
            results = [
                results[i] if i == failed else {**halted, "referenceId": s.get("referenceId")}
                for i, s in enumerate(subrequests)
            ]
        return 200, {"compositeResponse": results}

    def _subrequest(self, sub: dict[str, Any], done: dict[str, Any]) -> dict[str, Any]:
        reference = str(sub.get("referenceId", ""))
        try:
            url = _substitute(str(sub.get("url", "")), done)
            payload = _substitute_in(sub.get("body"), done)
        except KeyError as exc:
            status: int = 400
            answer: Any = [
                {
                    "errorCode": "PROCESSING_HALTED",
                    "message": f"Invalid reference specified. No value for {exc.args[0]} found. "
                    f"Provided referenceId ('{reference}')",
                }
            ]
        else:
            split = urlsplit(url)
            versioned = _VERSIONED.match(split.path)
            if versioned is None:
                status, answer = not_found().status, not_found().body()
            else:
                params = {k: v[-1] for k, v in parse_qs(split.query).items()}
                method = str(sub.get("method", "GET")).upper()
                try:
                    with self.org.transaction():
                        status, answer = self.handle(
                            method, split.path[versioned.end() :], params, payload
                        )
                        if status >= 400:
                            raise _RollBack
                except _RollBack:
                    pass
        if status < 400:
            done[reference] = answer
        return {
            "body": answer,
            "httpHeaders": {},
            "httpStatusCode": status,
            "referenceId": reference,
        }


class _RollBack(Exception):
    """Raised inside a transaction to undo it (allOrNone)."""


def _heavy(url: str) -> bool:
    path = urlsplit(url).path
    return "/composite/sobjects" in path or "/query" in path


def _substitute(text: str, done: dict[str, Any]) -> str:
    """Replace ``@{ref.path}`` (``path`` like ``id`` or ``records[0].Id``) by earlier results.
    Raises ``KeyError`` naming a reference that has no value."""

    def value(match: re.Match[str]) -> str:
        ref, path = match.group(1), match.group(2)
        if ref not in done:
            raise KeyError(f"{ref}.{path}")
        node: Any = done[ref]
        for step in re.findall(r"[^.\[\]]+", path):
            try:
                node = node[int(step)] if step.isdigit() else node[step]
            except (KeyError, IndexError, TypeError):
                raise KeyError(f"{ref}.{path}") from None
        return str(node)

    return _REFERENCE.sub(value, text)


def _substitute_in(node: Any, done: dict[str, Any]) -> Any:
    """``node`` (a parsed JSON body) with :func:`_substitute` applied to every string in it;
    numbers stay as parsed (Decimal)."""
    if isinstance(node, str):
        return _substitute(node, done)
    if isinstance(node, list):
        return [_substitute_in(item, done) for item in node]
    if isinstance(node, dict):
        return {key: _substitute_in(value, done) for key, value in node.items()}
    return node


def _fields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SalesforceError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    return {k: v for k, v in body.items() if k != "attributes"}


def _type(record: Any) -> str:
    sobject = record.get("attributes", {}).get("type") if isinstance(record, dict) else None
    if not sobject:
        raise SalesforceError(
            400, "INVALID_FIELD", "Each record needs attributes.type naming its sObject"
        )
    return str(sobject)


def _unknown(sobject: str, name: str) -> Any:
    raise SalesforceError(
        400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name]
    )
