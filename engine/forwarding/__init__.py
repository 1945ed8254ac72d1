"""Forwarding layer: the forwarding table, RFC 5058 branching and the flow cache (pure code)."""
