"""closeloop: an integration hub that keeps CRM, PSA and ERP consistent from closed-won to cash.

The package follows the layers of docs/architecture.md: ``domain`` (no I/O) <- ``ports``
(Protocols) <- the core (``flows``, ``engine``, ``mdm``, ``mapping``, ``reconcile``) <- the
adapters (``connectors``, ``store``, ``api``) <- ``config`` <- ``bootstrap`` <- ``devtools`` <-
``cli``; ``sandboxes`` stand apart and import nothing of the hub.
"""

__version__ = "0.1.0"
