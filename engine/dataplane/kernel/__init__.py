"""The in-kernel XCAST6 fast path: the TC eBPF program's source and its build (``build.py``)."""
