"""The Autotest client runtime that autoserv ships to hosts (stdlib-only Python 3).

This tree is copied as-is to ``<autodir>/`` on a host and run there with
``python3 -m autotest.client.runner`` (see :mod:`autotest.client.runner`).
"""
