"""autoserv: a Python 3 re-creation of Autotest's remote runner (Autoserv)."""

from setuptools import find_packages, setup

setup(
    name="autoserv",
    version="0.1.0",
    description="Run Autotest-style control files against remote hosts and KVM guests over SSH",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["autoserv", "autoserv.*"]),
    package_data={"autoserv": ["py.typed"], "autoserv.report": ["junit.xsd", "results.schema.json"]},
    install_requires=["paramiko>=3.4,<6", "scp>=0.15", "pexpect>=4.8", "rich>=13"],
    extras_require={
        "test": [
            "pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "mypy>=1.10", "types-paramiko",
            "xmlschema>=3", "jsonschema>=4.18",
        ],
        "bench": ["fabric>=3.2", "parallel-ssh>=2.12", "matplotlib>=3.8"],
    },
    entry_points={
        "console_scripts": [
            "autoserv=autoserv.cli:main",
            "autoserv-testbed=autoserv.testbed:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Software Development :: Testing",
    ],
)
