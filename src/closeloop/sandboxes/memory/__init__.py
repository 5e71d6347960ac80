"""A fault-injecting in-memory system: a source of changes and a target of commands.

:class:`~closeloop.sandboxes.memory.system.MemorySystem` holds the records and takes plain
JSON-shaped commands; :mod:`.app` serves it over HTTP (the hub's
:class:`~closeloop.connectors.memory.client.MemoryConnector` talks to it), so that an engine in
another process can be killed while its target lives on. Like every sandbox it imports
nothing of the hub.
"""
