"""SOQL over the sandbox org: the subset of :mod:`.soql` with relationship paths
(``Account.Name``), child subqueries over any child relationship of the object, standard or
custom (``(SELECT ... FROM OpportunityLineItems)``, ``(SELECT ... FROM Milestones__r)``,
several in one query), ``COUNT()``, and query cursors paged by ``nextRecordsUrl``.

Field names are resolved against the schema (any case in the query; the schema's spelling in
answers). A cursor keeps the ids that matched; later pages read those records as they are
then, so a record changed during paging comes with its new values, as a client must expect.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from closeloop.sandboxes.salesforce import soql
from closeloop.sandboxes.salesforce.org import Org, attributes
from closeloop.sandboxes.salesforce.records import SalesforceError
from closeloop.sandboxes.salesforce.schema import SObjectDef

QUERY_BATCH = 2000  #: records per query page (REST API default and maximum batch size)
MAX_CURSORS = 10  #: open query cursors per user; opening another drops the oldest
CURSOR_IDLE_S = 15 * 60  #: a cursor unused this long expires


@dataclass
class _Cursor:
    sobject: str
    query: soql.Query
    ids: list[str]
    position: int
    include_deleted: bool
    used_at: float


class Queries:
    """Runs queries on ``org`` and keeps their cursors; call under ``org.lock``."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()

    def query(self, text: str, include_deleted: bool = False) -> dict[str, Any]:
        """Run a SOQL query; the first page (``QUERY_BATCH`` records) and, when there are more,
        ``nextRecordsUrl``. Raises ``MALFORMED_QUERY``, ``INVALID_TYPE`` or ``INVALID_FIELD``
        (400). The cursor keeps the matching ids; later pages read the records as they are
        then (a record changed meanwhile comes with its new values)."""
        try:
            parsed = soql.parse(text)
        except soql.MalformedQuery as exc:
            raise SalesforceError(400, "MALFORMED_QUERY", str(exc)) from None
        spec = self._query_object(parsed.sobject)
        parsed = self._resolve(spec, parsed)
        rows = list(self.org.live[spec.name].values())
        if include_deleted:
            rows += list(self.org.deleted[spec.name].values())
        views = [self._view(spec, parsed, r) for r in rows] if _relations(parsed) else rows
        selected = soql.run(parsed, views)
        if parsed.count:
            return {"totalSize": len(selected), "done": True, "records": []}
        ids = [r["Id"] for r in selected]
        cursor = _Cursor(spec.name, parsed, ids, 0, include_deleted, time.monotonic())
        return self._page(cursor, None)

    def query_more(self, locator: str) -> dict[str, Any]:
        """The next page of an open cursor (``01g...-2000``); raises ``INVALID_QUERY_LOCATOR``."""
        cursor_id = locator.split("-")[0]
        cursor = self._cursors.get(cursor_id)
        if cursor is None or time.monotonic() - cursor.used_at > CURSOR_IDLE_S:
            self._cursors.pop(cursor_id, None)
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.used_at = time.monotonic()
        return self._page(cursor, cursor_id)

    def _page(self, cursor: _Cursor, cursor_id: str | None) -> dict[str, Any]:
        spec = self.org.schema[cursor.sobject]
        chunk = cursor.ids[cursor.position : cursor.position + QUERY_BATCH]
        cursor.position += len(chunk)
        records = []
        children = self._children(spec, cursor.query)
        for rid in chunk:
            row = self.org.live[spec.name].get(rid) or self.org.deleted[spec.name].get(rid)
            if row is not None:
                records.append(self._project(spec, cursor.query, row, children))
        page: dict[str, Any] = {
            "totalSize": len(cursor.ids),
            "done": cursor.position >= len(cursor.ids),
            "records": records,
        }
        if page["done"]:
            if cursor_id is not None:
                self._cursors.pop(cursor_id, None)
            return page
        if cursor_id is None:
            cursor_id = "01g5g" + uuid.uuid4().hex[:13].upper()
            self._cursors[cursor_id] = cursor
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)
        page["nextRecordsUrl"] = (
            f"/services/data/v{self.org.settings.api_version}/query/{cursor_id}-{cursor.position}"
        )
        return page

    def _query_object(self, name: str) -> SObjectDef:
        try:
            return self.org.sobject(name)
        except SalesforceError:
            raise SalesforceError(
                400, "INVALID_TYPE", f"sObject type '{name}' is not supported."
            ) from None

    def _resolve(self, spec: SObjectDef, query: soql.Query) -> soql.Query:
        """The query with every field path in the schema's own spelling; raises
        ``INVALID_FIELD`` naming an unknown field or relationship."""
        fields: list[str | soql.Query] = []
        for item in query.fields:
            if isinstance(item, soql.Query):
                relation = _child(spec, item.sobject)
                child_spec = self.org.schema[relation[0]]
                resolved = self._resolve(child_spec, replace(item, sobject=child_spec.name))
                fields.append(replace(resolved, sobject=relation[2]))
            else:
                fields.append(self._path(spec, item))
        order = tuple(
            soql.Order(self._path(spec, o.field), o.descending, o.nulls_last) for o in query.order
        )
        where = self._resolve_where(spec, query.where)
        return soql.Query(
            tuple(fields), spec.name, where, order, query.limit, query.offset, query.count
        )

    def _resolve_where(self, spec: SObjectDef, condition: Any) -> Any:
        if condition is None:
            return None
        if isinstance(condition, soql.Logical):
            return soql.Logical(
                condition.op, tuple(self._resolve_where(spec, p) for p in condition.parts)
            )
        return soql.Comparison(self._path(spec, condition.field), condition.op, condition.value)

    def _path(self, spec: SObjectDef, path: str) -> str:
        steps, current, out = path.split("."), spec, []
        for position, step in enumerate(steps):
            last = position == len(steps) - 1
            fdef = current.field(step) if last else _relationship(current, step)
            if fdef is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{step}' on entity '{current.name}'. If you are attempting "
                    "to use a custom field, be sure to append the '__c' after the custom field "
                    "name. Please reference your WSDL or the describe call for the appropriate "
                    "names.",
                )
            if last:
                out.append(fdef.name)
            else:
                out.append(fdef.relationship_name or "")
                current = self.org.schema[fdef.reference_to[0]]
        return ".".join(out)

    def _view(self, spec: SObjectDef, query: soql.Query, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with the parent records its paths name, nested under the relationship."""
        view = dict(row)
        for path in _relations(query):
            node, current = view, spec
            for step in path.split(".")[:-1]:
                if not isinstance(node, dict):
                    break
                fdef = _relationship(current, step)
                assert fdef is not None  # resolved before
                current = self.org.schema[fdef.reference_to[0]]
                parent = self.org.live[current.name].get(node.get(fdef.name) or "")
                node[step] = dict(parent) if parent is not None else None
                node = node[step]
        return view

    def _children(self, spec: SObjectDef, query: soql.Query) -> dict[str, dict[str, list[Any]]]:
        """For each subquery's relationship: the live child records by parent id."""
        grouped: dict[str, dict[str, list[Any]]] = {}
        for item in query.fields:
            if isinstance(item, soql.Query):
                child, ref, _ = _child(spec, item.sobject)
                by_parent: dict[str, list[Any]] = {}
                for row in self.org.live[child].values():
                    by_parent.setdefault(row.get(ref) or "", []).append(row)
                grouped[item.sobject] = by_parent
        return grouped

    def _project(
        self,
        spec: SObjectDef,
        query: soql.Query,
        row: dict[str, Any],
        children_of: dict[str, dict[str, list[Any]]],
    ) -> dict[str, Any]:
        version = self.org.settings.api_version
        view = self._view(spec, query, row) if _relations(query) else row
        out: dict[str, Any] = {"attributes": attributes(spec.name, row["Id"], version)}
        for item in query.fields:
            if isinstance(item, soql.Query):
                child, _, _ = _child(spec, item.sobject)
                children = children_of[item.sobject].get(row["Id"], [])
                chosen = soql.run(item, children)
                child_spec = self.org.schema[child]
                out[item.sobject] = (
                    {
                        "totalSize": len(chosen),
                        "done": True,
                        "records": [self._project(child_spec, item, r, {}) for r in chosen],
                    }
                    if chosen
                    else None
                )
                continue
            *parents, leaf = item.split(".")
            node: dict[str, Any] = out
            source: Any = view
            current = spec
            for step in parents:
                fdef = _relationship(current, step)
                assert fdef is not None
                current = self.org.schema[fdef.reference_to[0]]
                source = source.get(step) if isinstance(source, dict) else None
                if source is None:
                    node[step] = None
                    break
                if not isinstance(node.get(step), dict):
                    node[step] = {"attributes": attributes(current.name, source["Id"], version)}
                node = node[step]
            else:
                node[leaf] = source.get(leaf) if isinstance(source, dict) else None
        return out


def _relationship(spec: SObjectDef, name: str) -> Any:
    lowered = name.lower()
    return next(
        (
            f
            for f in spec.fields.values()
            if f.reference_to and (f.relationship_name or "").lower() == lowered
        ),
        None,
    )


def _child(spec: SObjectDef, relationship: str) -> tuple[str, str, str]:
    for name, relation in spec.children.items():
        if name.lower() == relationship.lower():
            return relation.child, relation.field, name
    raise SalesforceError(
        400,
        "INVALID_TYPE",
        f"Didn't understand relationship '{relationship}' in FROM part of query call.",
    )


def _relations(query: soql.Query) -> tuple[str, ...]:
    """The relationship paths (with a dot) a query reads, in fields, WHERE and ORDER BY."""
    paths = [p for p in query.paths if "." in p]
    paths += [o.field for o in query.order if "." in o.field]
    stack = [query.where]
    while stack:
        node = stack.pop()
        if isinstance(node, soql.Logical):
            stack.extend(node.parts)
        elif isinstance(node, soql.Comparison) and "." in node.field:
            paths.append(node.field)
    return tuple(dict.fromkeys(paths))
