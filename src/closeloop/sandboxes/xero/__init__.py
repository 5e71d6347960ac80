"""A Xero sandbox: OAuth 2.0 custom connections and the Accounting API (see :mod:`.app`)."""
