"""The durable engine: intake, apply, dispatch, retries, limits, breaker, replay."""
