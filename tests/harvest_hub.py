"""``python -m tests.harvest_hub DB CRM_URL HARVEST_BASE TOKEN ACCOUNT``: a hub process for
the Harvest crash test: engagements polled from a memory system (over HTTP) become Harvest
clients, projects and billings through the test flow; runs until SIGTERM (or SIGKILL)."""

from __future__ import annotations

import signal
import sys
import threading

from closeloop.bootstrap import build_hub
from closeloop.config import Settings
from closeloop.connectors.harvest.client import HarvestClient
from closeloop.connectors.harvest.connector import HarvestConnector
from closeloop.connectors.memory.client import MemoryConnector
from closeloop.observability import configure_logging
from closeloop.ports.flows import Binding
from closeloop.store.ratelimit_repo import SqlSharedRateLimit
from closeloop.store.sql import SqlStore
from tests.harvest_support import SetUpProjects, passthrough


def main() -> None:
    """Wire and run the hub."""
    db, crm_url, base_url, token, account = sys.argv[1:6]
    configure_logging("console", "warning")
    url = f"sqlite:///{db}"
    settings = Settings(
        database_url=url,
        worker={
            "poll_interval_s": 0.5,
            "retry_base_delay_s": 0.02,
            "retry_max_delay_s": 0.5,
            "lease_s": 5,
            "breaker_cooldown_s": 0.5,
        },
    )
    limit_store = SqlStore.from_url(url)
    harvest = HarvestConnector(
        HarvestClient(
            base_url,
            token,
            account,
            shared_limit=SqlSharedRateLimit(limit_store.engine),
            timeout_s=1.0,
        ),
        objects=(),
        batch_size=10,
        call_timeout_s=1.0,
    )
    crm = MemoryConnector(crm_url, system="crm", source_objects=["Engagement"], timeout_s=5)
    hub = build_hub(
        settings,
        connectors={"harvest": harvest, "crm": crm},
        bindings=[Binding("crm", "Engagement", "engagement", passthrough, (SetUpProjects(),))],
        upgrade=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        hub.worker.run(stop)
    finally:
        hub.close()
        limit_store.close()


if __name__ == "__main__":
    main()
