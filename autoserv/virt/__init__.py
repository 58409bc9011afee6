"""The parts of KVM support behind the public :mod:`autoserv.kvm` module.

One concern per module:

* :mod:`~autoserv.virt.source`: fetching the source to the controller, archives;
* :mod:`~autoserv.virt.install`: sending, configuring and making it on the host,
  finding the built qemu and BIOS directories, the accelerator probe;
* :mod:`~autoserv.virt.modules`: the KVM kernel modules (vendor, swap, removal);
* :mod:`~autoserv.virt.addresses`: the guest address pool (validated MAC/IP pairs);
* :mod:`~autoserv.virt.leases`: which guest holds which address on the host;
* :mod:`~autoserv.virt.guests`: a guest's lifecycle (start, liveness, monitor, stop);
* :mod:`~autoserv.virt.qemu`: pure qemu argv builders;
* :mod:`~autoserv.virt.scripts`: every shell text sent to the host;
* :mod:`~autoserv.virt.hypervisor`: the hypervisor base and the protocol guest hosts use.

Control files use :mod:`autoserv.kvm` (``kvm.KVM(host)``), not these modules.
"""
