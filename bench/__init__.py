"""autoserv's benchmark against its peers (``python -m bench``; see bench/README.md)."""
