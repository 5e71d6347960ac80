"""Local emulators of vendor systems, with quotas and fault injection."""
