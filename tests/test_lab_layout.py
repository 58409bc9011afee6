"""The lab wing's place in the package: the runner never imports it, its public names still work,
and a built autoserv carries the files the lab needs (the demo's control file, the guest's scripts)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import autoserv

ROOT = Path(__file__).resolve().parent.parent


def _core_modules() -> list[str]:
    """Every importable autoserv module outside autoserv.lab (``__main__`` modules would run)."""
    names = []
    for info in pkgutil.walk_packages(autoserv.__path__, "autoserv."):
        if info.name.startswith("autoserv.lab") or info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        names.append(info.name)
    return names


def test_the_runner_core_never_imports_the_lab() -> None:
    modules = _core_modules()
    assert {"autoserv.cli", "autoserv.job", "autoserv.hosts", "autoserv.localsys", "autoserv.demo",
            "autoserv.guest_image"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('autoserv'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert set(modules) <= set(loaded)
    assert [m for m in loaded if m == "autoserv.lab" or m.startswith("autoserv.lab.")] == []


def test_the_old_names_run_the_lab_modules() -> None:
    for old, new in (("autoserv.demo", "autoserv.lab.demo"),
                     ("autoserv.guest_image", "autoserv.lab.guest_image")):
        shim = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        home = subprocess.run([sys.executable, "-m", new, "--help"], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        assert shim.returncode == home.returncode == 0, shim.stderr + home.stderr
        assert shim.stdout == home.stdout and shim.stdout.startswith(f"usage: python -m {old} ")


def test_console_scripts_name_existing_functions() -> None:
    scripts = re.findall(r'"([\w-]+)=([\w.]+):(\w+)"', (ROOT / "setup.py").read_text())
    assert ("autoserv-testbed", "autoserv.lab.testbed", "main") in scripts
    for _name, module, func in scripts:
        assert callable(getattr(importlib.import_module(module), func))


def test_a_build_carries_the_lab_data(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "setup.py", "-q", "build", "-b", str(tmp_path / "build")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    lib = tmp_path / "build" / "lib"
    assert (lib / "autoserv/lab/control_examples/kvm_seed.control").read_bytes() == \
        (ROOT / "control_examples/kvm_seed.control").read_bytes()
    for name in ("rcS", "ready", "inittab", "profile"):
        assert (lib / "autoserv/lab/guest_image/files" / name).is_file()
    # far from any checkout, the built demo finds its control file in the package data
    code = "from autoserv.lab import demo; print(demo.SEED_CONTROL, demo.SEED_CONTROL.is_file())"
    path_first = f"import sys; sys.path.insert(0, {str(lib)!r}); "
    out = subprocess.run([sys.executable, "-I", "-c", path_first + code],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(lib / "autoserv/lab/control_examples/kvm_seed.control"), "True"], \
        out.stderr


def test_architecture_doc_names_every_module_once() -> None:
    """docs/architecture.md's "which module owns what" table: one row per module of the tree."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Which module owns what", 1)[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| `")]
    named = [re.fullmatch(r"`([\w/]+)`", cell).group(1) for cell in rows]
    modules = sorted(p.relative_to(ROOT / "autoserv").with_suffix("").as_posix()
                     for p in (ROOT / "autoserv").rglob("*.py"))
    assert len(named) == len(set(named))
    assert sorted(named) == modules
