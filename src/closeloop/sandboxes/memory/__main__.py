"""``python -m closeloop.sandboxes.memory --port N [--name memory]``: serve a memory system."""

from __future__ import annotations

import argparse

import uvicorn

from closeloop.sandboxes.memory.app import create_app
from closeloop.sandboxes.memory.system import MemorySystem


def main() -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="memory")
    parser.add_argument("--hang-s", type=float, default=5.0)
    args = parser.parse_args()
    app = create_app(MemorySystem(name=args.name), hang_s=args.hang_s)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
