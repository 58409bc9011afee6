"""Modules shared by the client runtime and its tests: errors, utils, status, keyvals.

``status``, ``legacy``, ``result``, ``outcomes``, ``deadline`` and ``barrier_protocol`` are
autoserv's own modules, shipped as they are (see ``autoserv/client/__init__.py``), so the host
never needs autoserv installed.
"""
