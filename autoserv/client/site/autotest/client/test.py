"""``from autotest.client import test``: the client test base class ``test.test``."""

from autotest.client.shared.test import runtest, test

__all__ = ["test", "runtest"]
