"""A local Salesforce sandbox built to Salesforce's REST contract (issue 5, in progress)."""
