"""autoserv: a Python 3 re-creation of Autotest's remote runner (Autoserv)."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: Files of the checkout that the lab's demo needs when autoserv is installed (copied at build).
LAB_DATA = {"control_examples/kvm_seed.control": "autoserv/lab/control_examples/kvm_seed.control"}


class BuildWithLabData(build_py):
    """build_py that also copies :data:`LAB_DATA` into the built package (a wheel's demo works)."""

    def run(self) -> None:
        super().run()
        for src, dest in LAB_DATA.items():
            target = Path(self.build_lib) / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)


setup(
    name="autoserv",
    version="0.1.0",
    description="Run Autotest-style control files against remote hosts and KVM guests over SSH",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["autoserv", "autoserv.*"]),
    package_data={
        "autoserv": ["py.typed"],
        # the client runtime shipped to hosts: a file tree, not packages of autoserv
        "autoserv.client": ["site/**/*"],
        "autoserv.lab.guest_image": ["files/*"],
        "autoserv.report": ["junit.xsd", "results.schema.json"],
    },
    install_requires=["paramiko>=3.4,<6", "scp>=0.15", "pexpect>=4.8", "pyflakes>=3.2", "rich>=13",
                      "setproctitle>=1.3"],
    extras_require={
        "test": [
            "pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "mypy>=1.10", "types-paramiko",
            "xmlschema>=3", "jsonschema>=4.18", "matplotlib>=3.8",  # tests draw the bench chart
            "invoke>=2",  # tests run an ssh config's Match exec (paramiko runs it with invoke)
        ],
        "bench": ["fabric>=3.2", "parallel-ssh>=2.12", "asyncssh>=2.14", "matplotlib>=3.8"],
    },
    cmdclass={"build_py": BuildWithLabData},
    entry_points={
        "console_scripts": [
            "autoserv=autoserv.cli:main",
            "autoserv-testbed=autoserv.lab.testbed:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Software Development :: Testing",
    ],
)
