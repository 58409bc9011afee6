"""Host-side faults of issue 11 against real test bed hosts: noisy login shells, endless
output, hostile file names, silent servers, full disks, lost connections and networks.

Each test failed before its fix; together they measure that nothing is left running on a
host and nothing hangs.
"""

from __future__ import annotations

import pytest

from autoserv import hosts
from autoserv.errors import AutoservRunTimeoutError
from autoserv.lab.testbed import Testbed
from tests.host_helpers import alive


@pytest.fixture
def noisy(testbed_noisy: Testbed) -> hosts.SSHHost:
    """A host whose root ``.bashrc`` prints banners on stdout and stderr before every command."""
    return hosts.SSHHost(testbed_noisy.machines[0], ssh_config=str(testbed_noisy.ssh_config))


# -- 1: the remote kill does not depend on a silent login shell ----------------------------


def test_noisy_login_output_is_not_in_the_result(noisy: hosts.SSHHost) -> None:
    r = noisy.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    assert "AUTOSERV" not in r.stdout + r.stderr


def test_timeout_on_a_noisy_host_kills_the_remote_command(noisy: hosts.SSHHost) -> None:
    with pytest.raises(AutoservRunTimeoutError) as info:
        noisy.run("sleep 3601", timeout=3)
    res = info.value.result_obj
    assert res is not None and "AUTOSERV" not in res.stderr + res.stdout
    assert alive(noisy, "'slee[p] 3601'") == []


def test_exception_on_a_noisy_host_kills_the_remote_command(noisy: hosts.SSHHost) -> None:
    class Interrupt(BaseException):
        pass

    class RaisingTee:
        def write(self, text: str) -> int:
            raise Interrupt

    with pytest.raises(Interrupt):
        noisy.run("echo go; sleep 3602", stdout_tee=RaisingTee())
    assert alive(noisy, "'slee[p] 3602'") == []
