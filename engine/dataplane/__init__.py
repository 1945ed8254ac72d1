"""Data plane: packet workers, AF_PACKET rx/tx, counters and CPU tuning (the Python provider;
the in-kernel eBPF path will be its sibling here)."""
