"""Benchmarks: each prints a table and writes JSON (and a PNG where matplotlib is installed).

``xcast6-engine bench engine|links`` run the in-process ones; the ``bench_*.py`` scripts drive the
namespace lab, real snmpd and NETCONF servers (``python bench/bench_lab.py --help``).
"""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the ``bench`` group to the root command."""
    from bench import engine, links

    bench_app = typer.Typer(
        help="Benchmarks (print a table, write JSON and a PNG plot).", no_args_is_help=True
    )
    engine.register(bench_app)
    links.register(bench_app)
    root.add_typer(bench_app, name="bench")
