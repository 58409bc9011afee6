"""raisetest: raises the exception class named by `exc` (from autotest.client.shared.error, or ValueError)."""

from autotest.client import test
from autotest.client.shared import error


class raisetest(test.test):
    version = 1

    def run_once(self, exc="none"):
        if exc == "none":
            return
        if exc == "ValueError":
            raise ValueError("boom from run_once")
        if exc == "exit":
            import os
            os._exit(7)
        if exc == "kill":
            import os
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        raise getattr(error, exc)("raised " + exc)
