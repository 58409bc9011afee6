"""Modules shared by the client runtime and its tests: errors, utils, status, keyvals.

``status``, ``legacy`` and ``result`` are byte-identical copies of autoserv's own modules
(autoserv ships them so the host never needs autoserv installed; a test keeps them equal).
"""
