"""The Xero connector: an ERP over the Accounting API (see :mod:`.plugin`)."""
