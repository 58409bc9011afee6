"""autoserv: run Autotest-style control files against remote hosts and KVM guests.

The library layer: :mod:`autoserv.hosts` (SSH hosts, guests), :mod:`autoserv.kvm`,
:mod:`autoserv.errors`, :mod:`autoserv.utils`; the runner: :mod:`autoserv.cli`,
:mod:`autoserv.job`; the local lab (test bed, demo, guest image): :mod:`autoserv.lab`.
"""

__version__ = "0.1.0"
