"""Client side of the runtime: the runner, the client ``job``, ``test`` and ``utils``."""
