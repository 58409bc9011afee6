import os
from autotest_lib.client.bin import test, utils
from autotest_lib.client.common_lib import error
import py2helper


class py2test(test.test):
    version = 1

    def run_once(self, count=3, fail=False):
        values = py2helper.double(range(count))
        total = 0
        for i in xrange(count):
            total += values[i]
        print "total is", total
        try:
            raise error.TestWarn, "just a warning"
        except error.TestWarn, e:
            print >>open(os.path.join(self.resultsdir, "caught"), "w"), str(e)
        if self.outputdir <> None and d_has(dict(total=total)):
            self.write_perf_keyval({'total': total})
        out = utils.system_output("echo 0777")
        self.write_attr_keyval({'octal': 0777, 'echo': out})
        if fail:
            print "about to fail"; ratio = total / 0  # FAILS HERE


def d_has(d):
    return d.has_key('total')
