"""The local lab: tools for trying autoserv on one machine, without a lab of real hosts.

* :mod:`autoserv.lab.testbed`: real OpenSSH ``sshd`` hosts on loopback or in network
  namespaces (``autoserv-testbed up|down|status``);
* :mod:`autoserv.lab.guest_image`: a tiny cached qemu guest (Debian kernel + initramfs);
* :mod:`autoserv.lab.boot_disk`: a bootable FAT disk holding that kernel and initramfs;
* :mod:`autoserv.lab.demo`: the seed KVM control file end to end (``python -m autoserv.demo``).

The lab may use everything in autoserv; nothing in the runner imports it.
"""
