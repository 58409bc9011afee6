"""send_file/get_file against real sshd hosts: rsync semantics, odd names, scp- or sftp-only hosts.

Test bed hosts share this machine's filesystem, so what a host wrote is checked
directly on disk; every test works in its own temporary directories.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoserv import hosts
from autoserv.errors import AutoservError, AutoservRunError
from autoserv.lab.testbed import Testbed
from tests.conftest import HOST_KINDS


@pytest.fixture(scope="session", params=HOST_KINDS)
def testbed(request: pytest.FixtureRequest) -> Testbed:
    """Each test using this runs against a loopback, a netns and a noisy-login host."""
    return request.getfixturevalue(f"testbed_{request.param}")


ODD = "we ird $name 'q' \"dq\" `x`"


def _tree(root: Path) -> dict[str, str]:
    """{relative path: content or '<dir>' or '-> target'} of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_text()
    return out


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "sub").mkdir(parents=True)
    (s / "a.txt").write_text("A")
    (s / "sub" / "b.txt").write_text("B")
    (s / ODD).write_text("odd")
    run = s / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o750)
    return s


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    r = tmp_path / "remote"
    r.mkdir()
    return r


@pytest.fixture(params=["scp", "sftp-only", "scp-only", "noisy"])
def xhost(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[hosts.SSHHost]:
    """A host of each transfer flavour: normal, without scp, without an sftp subsystem, one
    whose login shell prints banners on stdout and stderr."""
    if request.param in ("scp", "noisy"):
        tb: Testbed = request.getfixturevalue(
            "testbed_loopback" if request.param == "scp" else "testbed_noisy")
        h = hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config))
        yield h
        h.close()
        return
    flags = {"sftp-only": {"scp": False}, "scp-only": {"sftp": False}}[request.param]
    with Testbed(tmp_path_factory.mktemp(request.param), count=1, **flags) as tb:  # type: ignore[arg-type]
        h = hosts.SSHHost(tb.machines[0], ssh_config=str(tb.ssh_config))
        yield h
        h.close()


def test_file_to_new_path_and_into_dir(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    xhost.send_file(str(src / "a.txt"), str(remote / "copy.txt"))
    assert (remote / "copy.txt").read_text() == "A"
    xhost.send_file(str(src / "a.txt"), str(remote))
    assert (remote / "a.txt").read_text() == "A"


def test_directory_is_copied_by_name(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    xhost.send_file(str(src), str(remote / "dest"))
    assert _tree(remote / "dest" / "src") == _tree(src)


def test_trailing_slash_copies_contents(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    xhost.send_file(str(src) + "/", str(remote / "dest"))
    assert _tree(remote / "dest") == _tree(src)


def test_several_sources_into_directory(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    xhost.send_file([str(src / "a.txt"), str(src / "sub"), str(src / ODD)], str(remote / "multi"))
    assert _tree(remote / "multi") == {"a.txt": "A", "sub": "<dir>", "sub/b.txt": "B", ODD: "odd"}


def test_odd_names_in_dest(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    dest = remote / f"dir {ODD}"
    xhost.send_file(str(src / ODD), str(dest) + "/")
    assert (dest / ODD).read_text() == "odd"
    back = remote.parent / "back"
    back.mkdir()
    xhost.get_file(str(dest / ODD), str(back / "x"))
    assert (back / "x").read_text() == "odd"


def test_modes_preserved(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    xhost.send_file(str(src / "run.sh"), str(remote / "run.sh"))
    assert (remote / "run.sh").stat().st_mode & 0o777 == 0o750


def test_get_file_mirrors_send(xhost: hosts.SSHHost, src: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    xhost.get_file(str(src), str(local))
    assert _tree(local / "src") == _tree(src)
    xhost.get_file(str(src) + "/", str(tmp_path / "contents"))
    assert _tree(tmp_path / "contents") == _tree(src)
    xhost.get_file([str(src / "a.txt"), str(src / "sub")], str(tmp_path / "several"))
    assert _tree(tmp_path / "several") == {"a.txt": "A", "sub": "<dir>", "sub/b.txt": "B"}


def test_delete_dest_mirrors(xhost: hosts.SSHHost, src: Path, remote: Path) -> None:
    dest = remote / "mirror"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    xhost.send_file(str(src) + "/", str(dest), delete_dest=True)
    assert _tree(dest) == _tree(src)
    xhost.send_file(str(src) + "/", str(dest))  # without delete: no error, same content
    assert _tree(dest) == _tree(src)


def test_missing_sources_are_clear_errors(xhost: hosts.SSHHost, tmp_path: Path) -> None:
    with pytest.raises(AutoservError, match="does not exist"):
        xhost.send_file(str(tmp_path / "nope"), "/tmp")
    with pytest.raises(AutoservRunError, match="does not exist"):
        xhost.get_file(str(tmp_path / "nope-remote"), str(tmp_path / "x"))


def test_symlinks_followed_or_preserved(testbed: Testbed, src: Path, remote: Path,
                                        tmp_path: Path) -> None:
    h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    (src / "link").symlink_to("a.txt")
    h.send_file(str(src) + "/", str(remote / "followed"))
    assert (remote / "followed" / "link").read_text() == "A"
    assert not (remote / "followed" / "link").is_symlink()
    h.send_file(str(src) + "/", str(remote / "kept"), preserve_symlinks=True)
    assert os.readlink(remote / "kept" / "link") == "a.txt"
    h.get_file(str(remote / "kept"), str(tmp_path / "got"), preserve_symlinks=True)
    assert os.readlink(tmp_path / "got" / "kept" / "link") == "a.txt"
    assert _tree(tmp_path / "got" / "kept") == _tree(src)


def test_preserve_perm_false_applies_umask(testbed: Testbed, src: Path, tmp_path: Path) -> None:
    h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    (src / "open.txt").write_text("o")
    (src / "open.txt").chmod(0o666)
    old = os.umask(0o027)
    try:
        h.get_file(str(src / "open.txt"), str(tmp_path / "o.txt"), preserve_perm=False)
    finally:
        os.umask(old)
    assert (tmp_path / "o.txt").stat().st_mode & 0o777 == 0o640


def test_large_file_round_trip(testbed: Testbed, tmp_path: Path) -> None:
    h = hosts.SSHHost(testbed.machines[0], ssh_config=str(testbed.ssh_config))
    data = os.urandom(8 * 1024 * 1024)
    (tmp_path / "big").write_bytes(data)
    h.send_file(str(tmp_path / "big"), str(tmp_path / "big.remote"))
    h.get_file(str(tmp_path / "big.remote"), str(tmp_path / "big.back"))
    assert (tmp_path / "big.back").read_bytes() == data
