"""failtest: always fails with TestFail (to check that failures are recorded)."""

from autotest.client import test
from autotest.client.shared import error


class failtest(test.test):
    version = 1

    def run_once(self):
        raise error.TestFail("This test always fails.")
