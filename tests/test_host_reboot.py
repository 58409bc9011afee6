"""Host.reboot against the test bed's simulated reboots (new boot id, sshd restarted)."""

from __future__ import annotations

import os

from autoserv import hosts
from autoserv.hosts import context
from autoserv.lab.testbed import Testbed


def test_reboot_waits_down_and_up(testbed: Testbed) -> None:
    # the test bed simulates reboots per host (new boot id, sshd restarted)
    h = hosts.SSHHost(testbed.machines[2], ssh_config=str(testbed.ssh_config))
    records: list[tuple[object, ...]] = []
    with context.job_context(record=lambda *a, **k: records.append((*a, k.get("optional_fields")))):
        old = h.get_boot_id()
        h.reboot(timeout=60)
        assert h.get_boot_id() != old
        # the host is really back: nothing of the old boot kills the new sessions
        assert h.run_output("sleep 1; echo alive") == "alive"
    ops = [(r[0], r[2]) for r in records]
    assert ops == [
        ("START", "reboot"),
        ("GOOD", "reboot.start"),
        ("GOOD", "reboot.verify"),
        ("END GOOD", "reboot"),
    ]
    assert records[-1][-1] == {"kernel": os.uname().release}
