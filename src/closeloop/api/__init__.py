"""HTTP app: webhooks, health, metrics and the operations API."""
