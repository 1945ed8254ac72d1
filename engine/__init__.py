"""XCAST6 routing engine: wire codec, forwarding table, branching and the packet worker."""

__version__ = "0.1.0"
