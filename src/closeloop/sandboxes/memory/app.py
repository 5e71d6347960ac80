"""The memory system over HTTP: batch writes, lookups, change pages, and faults as real
HTTP failures (429 with Retry-After, 503, a hung request, a connection cut after the write).

Run with ``python -m closeloop.sandboxes.memory --port N``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from closeloop.sandboxes.faults import CutResponse, Fault, FaultPlan
from closeloop.sandboxes.memory.system import MemorySystem


def create_app(system: MemorySystem, hang_s: float = 5.0) -> FastAPI:
    """The HTTP app serving ``system``. ``hang_s``: how long a ``timeout`` fault holds a request."""
    app = FastAPI(title=f"closeloop memory sandbox ({system.name})")

    def fault_response(fault: Fault) -> Response | None:
        if fault.kind == "rate_limited":
            return JSONResponse(
                {"error": "rate limited"},
                status_code=429,
                headers={"Retry-After": str(system.faults.retry_after_s)},
            )
        if fault.kind == "server_error":
            return JSONResponse({"error": "unavailable"}, status_code=503)
        if fault.kind == "lost_response":
            return CutResponse()
        return None

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/batch")
    async def batch(request: Request) -> Response:
        body = await request.json()
        commands = body.get("commands") if isinstance(body, dict) else None
        if not isinstance(commands, list) or not all(
            isinstance(c, dict) and isinstance(c.get("idempotency_key"), str) for c in commands
        ):
            raise HTTPException(400, "malformed batch: commands with idempotency keys expected")
        if system.faults.latency_s:
            await asyncio.sleep(system.faults.latency_s)
        try:
            outcomes = system.apply_batch(commands)
        except Fault as fault:
            response = fault_response(fault)
            if response is None:  # timeout: hold the request past the client's patience
                await asyncio.sleep(hang_s)
                return JSONResponse({"error": "gateway timeout"}, status_code=504)
            return response
        return JSONResponse({"outcomes": outcomes})

    @app.post("/find")
    def find(body: dict[str, Any]) -> dict[str, Any]:
        return {"found": system.lookup([str(k) for k in body.get("keys", [])])}

    @app.get("/changes/{object_name}")
    def changes(object_name: str, since: datetime | None = None) -> dict[str, Any]:
        pages = [
            [{**c, "modified_at": c["modified_at"].isoformat()} for c in page]
            for page in system.read_pages(object_name, since)
        ]
        return {"pages": pages}

    @app.put("/records/{object_name}/{external_id}")
    def put_record(object_name: str, external_id: str, data: dict[str, Any]) -> dict[str, int]:
        return {"version": system.put(object_name, external_id, data)}

    @app.post("/records/{object_name}")
    def put_records(object_name: str, records: list[dict[str, Any]]) -> dict[str, int]:
        """Write many records at once: ``[{"id": ..., "data": {...}}]``."""
        for record in records:
            system.put(object_name, str(record["id"]), dict(record["data"]))
        return {"written": len(records)}

    @app.get("/effects")
    def effects() -> dict[str, Any]:
        """Every write applied (in order), what the system holds now, and calls by kind."""
        return {
            "effects": [
                {"idempotency_key": e.idempotency_key, "entity": e.entity, "data": e.data}
                for e in system.effects
            ],
            "targets": system.targets,
            "calls": system.calls,
        }

    @app.put("/faults")
    def set_faults(plan: dict[str, Any]) -> dict[str, Any]:
        system.set_faults(FaultPlan(**plan))
        return plan

    return app
