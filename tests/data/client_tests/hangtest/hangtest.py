"""hangtest: starts a shell child carrying `marker` in its command line, then hangs."""

import os
import subprocess
import time

from autotest.client import test


class hangtest(test.test):
    version = 1

    def run_once(self, marker="hangtest-marker", seconds=300):
        child = subprocess.Popen(["/bin/sh", "-c", "sleep %d; true %s" % (seconds, marker)])
        with open(os.path.join(self.outputdir, "pids"), "w") as f:
            f.write("%d %d\n" % (os.getpid(), child.pid))
        time.sleep(seconds)
