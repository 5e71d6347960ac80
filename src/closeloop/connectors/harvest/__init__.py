"""The Harvest (PSA) connector."""
