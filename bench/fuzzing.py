"""What the fuzz campaigns (fuzz_packets.py, fuzz_snmp.py) share: memory readings, where a
crash was raised, and the command line that runs a campaign and writes its JSON."""

from __future__ import annotations

import argparse
import json
import os
import resource
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parents[1]


def rss_kib() -> int:
    """Current resident set size (KiB), from /proc (ru_maxrss is only the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far (KiB, Linux ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def where(exc: BaseException, package: str) -> str:
    """``file:line (function)`` of the innermost frame inside ``package`` (e.g. ``"/engine/"``),
    relative to the checkout: the crash class key."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if package in f.filename]
    frame = (own or frames)[-1]
    return f"{frame.filename.replace(str(ROOT) + '/', '')}:{frame.lineno} ({frame.name})"


def campaign_main(argv: list[str] | None, description: str, default_out: str,
                  run: Callable[[int, int, int], dict[str, Any]],
                  report: Callable[[dict[str, Any]], None],
                  failed: Callable[[dict[str, Any]], bool]) -> int:
    """Command line of a campaign: run, print, write JSON; exit 1 when ``failed(result)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", type=int, default=100_000, help="print a line every N inputs")
    parser.add_argument("--out", type=Path, default=Path(default_out))
    args = parser.parse_args(argv)
    result = run(args.inputs, args.seed, args.progress)
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed(result) else 0
