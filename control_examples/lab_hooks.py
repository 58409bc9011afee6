# A lab's hook file: what only this lab knows about its machines.
#
#   autoserv -v -m host1,host2 --hooks control_examples/lab_hooks.py
#   autoserv -i control_examples/lifecycle.control -m host1 --hooks control_examples/lab_hooks.py
#   (or export AUTOSERV_HOOKS=control_examples/lab_hooks.py)
#
# Define any of verify, repair, install, hardreset, collect_crashinfo; leave out what your
# lab cannot do.  Each runs in the machine's worker, with its results directory as the
# working directory; raising fails that machine's segment with the exception as the reason.
# On the test bed (autoserv-testbed up) 'reboot' is the test bed's own simulated power control.

import os


def verify(host):
    """Extra checks on top of SSH, not shutting down and free disk space."""
    if host.run("test -w /var/tmp", ignore_status=True).exit_status != 0:
        raise RuntimeError("/var/tmp is not writable")


def install(host):
    """-i / -I / host.machine_install(): e.g. ask the lab's installer for a fresh image."""
    image = os.environ.get("LAB_IMAGE", "stock")
    host.run("echo installed image: \"$1\"", args=[image])


def hardreset(host):
    """host.hardreset(): e.g. the PDU's command line; here: the host's own (test bed) reboot."""
    host.run("( sleep 1; reboot ) </dev/null >/dev/null 2>&1 &")


def collect_crashinfo(host, dest):
    """More files for <results>/<machine>/crashinfo/ when a job fails."""
    out = host.run("ip -brief addr 2>/dev/null || true", ignore_status=True).stdout
    with open(os.path.join(dest, "ip-addr"), "w") as f:
        f.write(out)
