"""lifecycletest: records the order of its lifecycle calls, writes perf/attr keyvals per iteration."""

import os

from autotest.client import test, utils
from autotest.client.shared import error


class lifecycletest(test.test):
    version = 3

    def _note(self, what):
        with open(os.path.join(self.outputdir, "calls"), "a") as f:
            f.write(what + "\n")

    def initialize(self, fail_in=None):
        self.fail_in = fail_in
        self._note("initialize")
        for name in ("outputdir", "resultsdir", "debugdir", "bindir", "srcdir", "tmpdir"):
            self._note("%s=%s" % (name, os.path.isdir(getattr(self, name))))
        self._note("tmpdir_in_job_tmpdir=%s" % self.tmpdir.startswith(self.job.tmpdir))
        self._note("bindir_has_module=%s" % os.path.isfile(os.path.join(self.bindir, "lifecycletest.py")))

    def setup(self, counter=None):
        self._note("setup")
        if counter:
            with open(counter, "a") as f:
                f.write("setup version %s\n" % self.version)

    def warmup(self):
        self._note("warmup")

    def run_once(self, rate=10, fail_in=None):
        self._note("run_once %d" % self.iteration)
        if fail_in == "run_once" and self.iteration == 2:
            raise error.TestFail("failing in iteration 2")
        self.write_perf_keyval({"throughput": rate * self.iteration, "latency_ms": 1.5})
        self.write_attr_keyval({"cpus": utils.count_cpus()})

    def postprocess_iteration(self):
        self._note("postprocess_iteration %d" % self.iteration)

    def postprocess(self):
        self._note("postprocess")

    def cleanup(self):
        self._note("cleanup")
