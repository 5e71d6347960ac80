"""closeloop: an integration hub that keeps CRM, PSA and ERP consistent from closed-won to cash.

The package follows the layering in DESIGN.md: ``domain`` (no I/O) <- ``ports`` (Protocols)
<- ``flows``/``engine``/``mdm``/``reconcile`` <- ``connectors``/``store``/``api``/``sandboxes``
<- ``bootstrap``/``cli``.
"""

__version__ = "0.1.0"
