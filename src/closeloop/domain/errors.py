"""The root of every error closeloop raises on purpose, and the branches callers act on.

::

    CloseloopError
    ├── InputError (ValueError)          bad input, refused whole: whoever sent it fixes it
    │   ├── MappingError                 a vendor record cannot be mapped   (domain.records)
    │   ├── CurrencyMismatchError        money of two currencies combined   (domain.money)
    │   ├── IllegalTransitionError       a lifecycle move that is not allowed (domain.lifecycle)
    │   ├── IntakeError                  a change refused at intake         (engine.intake)
    │   ├── ConfigError                  configuration that cannot be used  (config)
    │   └── FileProblems                 configuration or mapping files     (config.files)
    ├── NotFoundError (LookupError)      what was named does not exist
    │   ├── UnknownObjectError           a vendor object no binding reads   (engine.registry)
    │   ├── UnknownConnectorError        a ``kind`` no connector has        (connectors.catalog)
    │   └── OperationNotFound            an exception id that is not there  (engine.operations)
    ├── ConflictError                    not possible in the current state
    │   ├── OperationError               an operator action refused         (engine.operations)
    │   └── SchemaMismatch               the database's schema is empty, behind or ahead
    │                                    of this code's                     (store.migrate)
    ├── ConnectorError                   a call to a system failed as a whole (ports.connector)
    │   ├── TransientError               nothing applied; retry later
    │   ├── AmbiguousError               sent, no answer: look up before retrying
    │   └── RefusedError                 the content was refused as a whole
    ├── VendorError                      a system answered with its own error (its clients:
    │                                    TrytonError, HarvestApiError, SalesforceApiError)
    └── FlowError (RuntimeError)         a flow misbehaved (engine.runtime)

The HTTP app maps these by type (:mod:`closeloop.api.app`): ``InputError`` 422,
``NotFoundError`` 404, ``ConflictError`` 409; never by message text.
"""

from __future__ import annotations


class CloseloopError(Exception):
    """Root of closeloop's errors (the tree above)."""


class InputError(CloseloopError, ValueError):
    """Bad input, refused whole; the message says what to fix."""


class NotFoundError(CloseloopError, LookupError):
    """What was named does not exist."""


class ConflictError(CloseloopError):
    """The action is not possible in the current state."""


class VendorError(CloseloopError):
    """A system answered a call with its own error (status and message kept by the
    subclass)."""


class FlowError(CloseloopError, RuntimeError):
    """A flow misbehaved (raised on an event, signalled in a loop)."""
