"""Table definitions. Migrations in ``migrations/versions`` must match these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite wants INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone: stored as UTC, read as UTC).

    Raises ``ValueError`` when given a naive datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: closeloop stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UtcDateTime()

inbox = Table(
    "inbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("system", String(64), nullable=False),
    Column("object", String(80), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("version", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("correlation_id", String(64)),
    Column("modified_at", TS),
    Column("received_at", TS, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("error", Text),
    Column("processed_at", TS),
    UniqueConstraint("system", "object", "external_id", "version", name="uq_inbox_identity"),
)
_PENDING = inbox.c.status == "pending"
Index("ix_inbox_pending", inbox.c.id, postgresql_where=_PENDING, sqlite_where=_PENDING)
Index("ix_inbox_record", inbox.c.system, inbox.c.object, inbox.c.external_id, inbox.c.id)

records = Table(
    "records",
    metadata,
    Column("system", String(64), primary_key=True),
    Column("object", String(80), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("canonical_type", String(64), nullable=False),
    Column("canonical_id", String(36), nullable=False),
    Column("version", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("data", JSON, nullable=False),
    Column("updated_at", TS, nullable=False),
)

xref = Table(
    "xref",
    metadata,
    Column("canonical_type", String(64), primary_key=True),
    Column("system", String(64), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("canonical_id", String(36), nullable=False),
)
Index("ix_xref_canonical", xref.c.canonical_type, xref.c.canonical_id, xref.c.system)

flows = Table(
    "flows",
    metadata,
    Column("flow", String(64), primary_key=True),
    Column("business_key", String(255), primary_key=True),
    Column("state", String(64), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("wake_at", TS, nullable=True),
)
Index("ix_flows_wake_at", flows.c.wake_at)

commands = Table(
    "commands",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("system", String(64), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("business_key", String(255), nullable=False),
    Column("entity", String(255), nullable=False, default=""),
    Column("impact", String(16), nullable=False),
    Column("flow", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("ambiguous", Boolean, nullable=False, default=False),
    Column("next_attempt_at", TS, nullable=False),
    Column("lease_until", TS),
    Column("claimed_by", String(128)),
    Column("first_attempt_at", TS),
    Column("result", JSON(none_as_null=True)),
    Column("last_error", Text),
    Column("correlation_id", String(64)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
_OPEN = commands.c.status.in_(["pending", "in_flight"])
Index("ix_commands_open", commands.c.id, postgresql_where=_OPEN, sqlite_where=_OPEN)
Index("ix_commands_key", commands.c.business_key, commands.c.id)
Index("ix_commands_entity", commands.c.system, commands.c.operation, commands.c.entity)

exceptions = Table(
    "exceptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("error_class", String(32), nullable=False),
    Column("impact", String(16), nullable=False),
    Column("entity", String(255), nullable=False),
    Column("message", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("command_id", BigInteger),
    Column("inbox_id", BigInteger),
    Column("correlation_id", String(64)),
    Column("resolved_by", String(128)),
    Column("resolution", Text),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_exceptions_status", exceptions.c.status, exceptions.c.id)
Index("ix_exceptions_entity", exceptions.c.entity)
Index("ix_exceptions_command", exceptions.c.command_id)

cursors = Table(
    "cursors",
    metadata,
    Column("system", String(64), primary_key=True),
    Column("object", String(80), primary_key=True),
    Column("watermark", TS),
    Column("seen", JSON, nullable=False),
    Column("updated_at", TS, nullable=False),
)

rate_windows = Table(
    "rate_windows",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("sent", JSON, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity", String(255), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("correlation_id", String(64)),
)
Index("ix_audit_entity", audit.c.entity, audit.c.id)

reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("domains", JSON, nullable=False),
    Column("repair", Boolean, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("records", JSON, nullable=False),
    Column("pages", JSON, nullable=False),
    Column("counts", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
)

reconcile_drifts = Table(
    "reconcile_drifts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", BigInteger, nullable=False),
    Column("domain", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("key", String(255), nullable=False),
    Column("field", String(255)),
    Column("values", JSON, nullable=False),
    Column("owner", String(64)),
    Column("status", String(16), nullable=False),
    Column("cause", Text, nullable=False),
    Column("repair", Text, nullable=False),
    Column("exception_id", BigInteger),
)
Index("ix_reconcile_drifts_run", reconcile_drifts.c.run_id, reconcile_drifts.c.id)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", TS),
    Column("revoked_at", TS),
    Column("last_used_at", TS),
    Column("sessions_after", TS),
)
Index("ix_api_keys_name", api_keys.c.name)

alert_conditions = Table(
    "alert_conditions",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("rule", String(32), nullable=False),
    Column("summary", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    Column("firing", Boolean, nullable=False),
    Column("since", TS, nullable=False),
    Column("seen_at", TS, nullable=False),
    Column("sent_at", TS),
    Column("owed", JSON, nullable=False),
    Column("cleared_at", TS),
)

alert_claims = Table(
    "alert_claims",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("until", TS, nullable=False),
    Column("slot", TS),
    Column("owed", JSON, nullable=False),
)
