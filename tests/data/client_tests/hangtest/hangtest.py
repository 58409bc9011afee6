"""hangtest: starts a shell carrying `marker` in its command line (Popen or utils.system), hangs."""

import os
import subprocess
import time

from autotest.client import test, utils


class hangtest(test.test):
    version = 1

    def run_once(self, marker="hangtest-marker", seconds=300, via="popen"):
        with open(os.path.join(self.outputdir, "pids"), "w") as f:
            f.write("%d\n" % os.getpid())
        command = "sleep %d; true %s" % (seconds, marker)
        if via == "utils":  # a command in its own process group, as utils.run makes it
            utils.system(command)
        else:
            subprocess.Popen(["/bin/sh", "-c", command])
            time.sleep(seconds)
