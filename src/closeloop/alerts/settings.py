"""The ``alerts:`` section of the configuration: channels, rules, rate limits, digest.

Example::

    alerts:
      every_s: 60                 # evaluate every minute (0: off)
      renotify_h: 24              # a condition still firing is notified again after this
      digest_at_utc: "08:00"      # daily digest of what is firing (null: none)
      channels:
        ops-mail: {kind: email, host: smtp.example.com, port: 587, starttls: true,
                   username: hub, password: ..., sender: hub@example.com,
                   to: [ops@example.com]}
        chat: {kind: webhook, url: "https://hooks.slack.com/services/...", secret: ...}
      rules:
        open_exceptions_above: 25          # count of open business exceptions
        sla_h: {revenue: 24, client: 72}   # hours an exception of that impact may stay open
        breaker_open_min: 15               # minutes a system's breaker may stay open
        quota_left_below: 0.1              # fraction of a system's quota left
        drift: true                        # the latest reconciliation run found drift
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator

from closeloop.domain.commands import Impact

Address = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=254)]


class EmailChannel(BaseModel):
    """An SMTP server: ``host``/``port``; ``ssl`` for implicit TLS (port 465) or ``starttls``
    to upgrade a plain connection (port 587), not both; ``username`` with ``password`` to
    log in; ``sender`` and ``to`` (one message to every address); ``ca_bundle``: CA
    certificates (PEM) to trust instead of the system's; ``timeout_s`` per connection."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: Address
    to: list[Address] = Field(min_length=1)
    ca_bundle: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _consistent(self) -> EmailChannel:
        if self.ssl and self.starttls:
            raise ValueError("choose ssl (implicit TLS) or starttls, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    def describe(self) -> str:
        """Where it sends, without secrets."""
        tls = " (TLS)" if self.ssl else " (STARTTLS)" if self.starttls else ""
        return f"email via {self.host}:{self.port}{tls} to {', '.join(self.to)}"


class WebhookChannel(BaseModel):
    """A JSON webhook (Slack and Teams incoming webhooks read its ``text``): POST to ``url``;
    with ``secret`` every request carries ``signature_header``: ``t=<unix s>,v1=<hex
    HMAC-SHA256 of "<t>.<body>">``; ``timeout_s`` per request."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook"]
    url: HttpUrl
    secret: SecretStr | None = None
    signature_header: str = Field(default="X-Closeloop-Signature", pattern=r"^[A-Za-z0-9-]+$")
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    def describe(self) -> str:
        """Where it sends, without secrets (the URL's host and path start only)."""
        signed = ", signed" if self.secret else ""
        return f"webhook to {self.url.scheme}://{self.url.host}{signed}"


Channel = Annotated[EmailChannel | WebhookChannel, Field(discriminator="kind")]


class AlertRules(BaseModel):
    """Which conditions alert (each off when absent): ``open_exceptions_above`` (open
    business exceptions, a count); ``sla_h`` (hours an open exception of each impact may
    wait); ``breaker_open_min`` (minutes a system's breaker may stay open, in the hub that
    evaluates); ``quota_left_below`` (fraction 0-1 of a system's quota left);
    ``drift`` (the latest reconciliation run counted drift)."""

    model_config = ConfigDict(extra="forbid")

    open_exceptions_above: int | None = Field(default=None, ge=0)
    sla_h: dict[Impact, float] = Field(default_factory=dict)
    breaker_open_min: float | None = Field(default=None, gt=0)
    quota_left_below: float | None = Field(default=None, gt=0, lt=1)
    drift: bool = False

    @model_validator(mode="after")
    def _positive(self) -> AlertRules:
        bad = [impact.value for impact, hours in self.sla_h.items() if hours <= 0]
        if bad:
            raise ValueError(f"sla_h must be positive hours (not for {', '.join(bad)})")
        return self

    def describe(self) -> list[str]:
        """Each rule that is on, in words."""
        lines = []
        if self.open_exceptions_above is not None:
            lines.append(f"more than {self.open_exceptions_above} open exceptions")
        for impact, hours in self.sla_h.items():
            lines.append(f"an exception of {impact.value} impact open longer than {hours:g} h")
        if self.breaker_open_min is not None:
            lines.append(f"a circuit breaker open longer than {self.breaker_open_min:g} min")
        if self.quota_left_below is not None:
            lines.append(f"a system with less than {self.quota_left_below:.0%} of its quota left")
        if self.drift:
            lines.append("reconciliation found drift")
        return lines


class AlertsConfig(BaseModel):
    """The ``alerts:`` section (see the module's example): evaluated every ``every_s``
    seconds inside ``closeloop run`` (0: off); a condition is notified when it starts
    firing and again every ``renotify_h`` hours while it fires; a digest of what is firing
    goes out daily at ``digest_at_utc`` (UTC; ``None``: no digest). Channel names are the
    keys of ``channels``."""

    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(default=60.0, ge=0)
    renotify_h: float = Field(default=24.0, gt=0)
    digest_at_utc: time | None = None
    channels: dict[str, Channel] = Field(default_factory=dict)
    rules: AlertRules = Field(default_factory=AlertRules)

    @model_validator(mode="after")
    def _sendable(self) -> AlertsConfig:
        if self.rules.describe() and not self.channels:
            raise ValueError("alerts.rules are set but no alerts.channels would carry them")
        if self.digest_at_utc is not None and not self.channels:
            raise ValueError("alerts.digest_at_utc is set but there is no channel to send it")
        return self
