"""``python -m closeloop.cli``."""

from closeloop.cli import main

main()
