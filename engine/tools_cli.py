"""Operator packet tools: decode, explain, send (filled in by the engine-core work)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the packet-tool commands to the root app."""
