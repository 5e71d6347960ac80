"""Salesforce connector (issue 5, in progress): Outbound Message intake so far."""
