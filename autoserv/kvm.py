"""KVM on a remote host: fetch, build, kernel modules and guests (being written)."""
