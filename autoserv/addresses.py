"""Moved to :mod:`autoserv.virt.addresses`; this name stays for the lab tools that still
import it (``autoserv.demo``, ``autoserv.guest_image``) and goes once they use the new one."""

from autoserv.virt.addresses import *  # noqa: F403
from autoserv.virt.addresses import __all__ as __all__
