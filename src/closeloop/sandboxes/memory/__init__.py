"""A fault-injecting in-memory system: a source of changes and a target of commands.

:class:`~closeloop.sandboxes.memory.system.MemorySystem` implements the engine's
:class:`~closeloop.ports.connector.Connector` in process; :mod:`.app` serves the same system
over HTTP so that an engine in another process can be killed while its target lives on.
"""
