"""What every connected system's settings have; each connector's own model extends it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SystemSettings(BaseModel):
    """One connected system under ``systems:``. ``kind`` names its connector (a row of
    :mod:`closeloop.connectors.catalog`); the limits override the connector's defaults.

    ``key_prefix``: the prefix of the business keys the hub makes from this system's records
    (a CRM's deals become projects ``<key_prefix>-<deal id>``); default: the connector's.
    ``poll_interval_s``: seconds between polls of this system's objects (default: the
    workers' ``worker.poll_interval_s``): a system with a tight API limit (Xero's 60 calls a
    minute) is polled less often than the others, so its polls leave room for its writes.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    url: str
    objects: list[str] | None = Field(default=None, description="default: the connector's")
    key_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,12}$")
    batch_size: int | None = Field(default=None, ge=1, description="default: the connector's")
    requests_per_window: int | None = Field(default=None, ge=1, description="default: the vendor's")
    window_s: float | None = Field(default=None, gt=0, description="default: the vendor's")
    max_concurrent: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    poll_interval_s: float | None = Field(default=None, gt=0, description="default: the worker's")
