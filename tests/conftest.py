"""Shared fixtures: real test bed hosts (sshd on loopback and in network namespaces)."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator

import pytest

from autoserv import hosts
from autoserv.hosts import context, registry
from autoserv.hosts.defaults import SSHDefaults
from autoserv.lab.testbed import Testbed

#: root's password on the test bed hosts (a private /etc/shadow per host).
TEST_PASSWORD = "autoserv-test-pw"
#: The host kinds of the ``testbed`` fixture; the netns one carries the ``netns`` mark, so
#: ``-m "not netns"`` runs the loopback half without making a namespace.
KINDS = ["loopback", pytest.param("netns", marks=pytest.mark.netns)]
#: The host kinds of the host behaviour tests: ``noisy`` is a loopback host whose root
#: ``.bashrc`` prints banners on stdout and stderr before every command.
HOST_KINDS = [*KINDS, "noisy"]
#: Fixtures that make network namespaces (``seed`` is test_kvm_e2e's netns test bed): a test
#: using one, directly or through another fixture, gets the ``netns`` mark too.
NETNS_FIXTURES = {"testbed_netns", "seed"}


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (e.g. from `timeout`) ends the run like Ctrl-C, so fixture
    # finalizers still stop every sshd and delete every namespace.
    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, _term)
    # issue 11's figures (faults survived, bad inputs, injections) after every run with probes
    try:
        from tests.probe_summary import ProbeSummary
    except ImportError:  # tests/ is not a package: pytest put it on sys.path
        from probe_summary import ProbeSummary  # type: ignore
    config.pluginmanager.register(ProbeSummary(), "issue11-probes")
    # the tests give passwords explicitly; one from the developer's shell must not leak in
    os.environ.pop("AUTOSERV_SSH_PASS", None)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NETNS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netns)


def _need_root_tools(kind: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root")
    if shutil.which("sshd") is None and not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("sshd is not installed (apt-get install openssh-server)")


def _testbed(tmp_path_factory: pytest.TempPathFactory, kind: str, noisy: bool = False
             ) -> Iterator[Testbed]:
    _need_root_tools(kind)
    name = "noisy" if noisy else kind
    with Testbed(
        tmp_path_factory.mktemp(f"testbed-{name}"), count=3, kind=kind, password=TEST_PASSWORD,
        noisy=noisy,
    ) as tb:
        yield tb


@pytest.fixture(scope="session")
def testbed_loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Three sshd hosts on 127.0.0.1 ports."""
    yield from _testbed(tmp_path_factory, "loopback")


@pytest.fixture(scope="session")
def testbed_netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Three sshd hosts, each in its own network namespace on a lab bridge."""
    yield from _testbed(tmp_path_factory, "netns")


@pytest.fixture(scope="session")
def testbed_noisy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Three loopback sshd hosts whose login shell prints banners on stdout and stderr."""
    yield from _testbed(tmp_path_factory, "loopback", noisy=True)


@pytest.fixture(scope="session", params=KINDS)
def testbed(request: pytest.FixtureRequest) -> Testbed:
    """Each test using this runs against both host kinds."""
    return request.getfixturevalue(f"testbed_{request.param}")


@pytest.fixture(autouse=True)
def _close_hosts_left_open() -> Iterator[None]:
    """A backstop: hosts a test did not close are closed (their connections dropped) after it."""
    yield
    registry.close_all()


@pytest.fixture
def ssh_defaults() -> Iterator[Callable[..., SSHDefaults]]:
    """``hosts.set_ssh_defaults`` for one test: it runs in a job context of its own."""
    with context.job_context():
        yield hosts.set_ssh_defaults


@pytest.fixture
def host(testbed: Testbed) -> Iterator[hosts.SSHHost]:
    """An SSHHost for the first test bed host, reached through the test bed's ssh config."""
    h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    yield h
    h.close()


@pytest.fixture(autouse=True)
def _check_reports_written(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every junit.xml / results.json a test's jobs wrote is valid against autoserv's schemas."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None:
        return
    try:
        from tests.report_helpers import check_json, check_junit
    except ImportError:  # tests/ is not a package: pytest put it on sys.path
        from report_helpers import check_json, check_junit  # type: ignore
    for path in tmp.rglob("junit.xml"):
        check_junit(path)
    for path in tmp.rglob("results.json"):
        check_json(path)
