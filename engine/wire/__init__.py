"""Wire layer: the XCAST6 / XOU / X2U packet formats, checksums and drop reasons (pure code)."""
