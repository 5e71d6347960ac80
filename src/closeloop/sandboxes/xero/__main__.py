"""``python -m closeloop.sandboxes.xero --home DIR --port N``: serve a Xero sandbox
organisation on 127.0.0.1 (see :mod:`.server`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn

from closeloop.sandboxes.faults import FaultPlan
from closeloop.sandboxes.xero.server import build_sandbox


def main() -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="state directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--faults", default="{}", help="fault plan as JSON")
    parser.add_argument("--hang-s", type=float, default=5.0)
    args = parser.parse_args()
    _, app = build_sandbox(args.home, FaultPlan(**json.loads(args.faults)), args.hang_s)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
