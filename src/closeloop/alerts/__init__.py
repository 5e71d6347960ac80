"""Alerts: conditions an operator should hear about (open exceptions above a threshold, an
exception older than its impact's SLA, a circuit breaker open too long, quota running low,
reconciliation drift), sent once per condition to email and JSON webhook channels, with a
re-notify interval and a daily digest; configured under ``alerts:``
(:mod:`.settings`), evaluated inside ``closeloop run`` (:mod:`.alerter`)."""
