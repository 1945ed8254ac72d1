"""Operator packet tools: ``decode``, ``explain``, ``send``, ``traceroute``, ``ping``, ``demo``.

Input for decode/explain: a hex string, a raw packet file, ``-`` (stdin), or a pcap/pcapng
file (every packet).  Whether a buffer starts with Ethernet is detected (IPv6 version nibble)
unless ``--l2/--no-l2`` says so; pcap link types decide for captures.
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.forwarding.branch import Brancher, BranchResult
from engine.forwarding.fib import Fib
from engine.model import NextHop, Route
from engine.tools import clikit
from engine.tools.pcapread import CaptureError, is_capture, read_capture, to_ipv6_or_l2
from engine.tools.routefile import RouteFileError, load, parse_text
from engine.wire.codec import Reject, XcastPacket, parse
from engine.wire.icmp6 import MAX_QUOTE
from engine.wire.layout import (
    IP6_HLEN,
    OUTER_DST_END,
    OUTER_DST_OFF,
    OUTER_HLIM_OFF,
    OUTER_SRC_END,
    OUTER_SRC_OFF,
)
from engine.wire.reasons import NOT_XCAST

DEFAULT_ENGINE_SOURCE = "2001:db8:ffff::e"


def _fail(msg: str, code: int = clikit.EXIT_USAGE) -> typer.Exit:
    return clikit.fail(msg, code, clikit.json_requested())


def _txt(a: bytes) -> str:
    return str(ipaddress.IPv6Address(a))


# ------------------------------------------------------------------------------------ input
@dataclass
class Input:
    label: str
    data: bytes
    l2: bool
    from_capture: bool = False


def _looks_hex(blob: bytes) -> bool:
    text = blob.decode("ascii", "replace").strip()
    return bool(text) and all(c in string.hexdigits or c in " \t\r\n:" for c in text.replace("0x", ""))


def _from_hex(text: str) -> bytes:
    cleaned = "".join(text.replace("0x", "").split()).replace(":", "")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise _fail(f"input is neither an existing file nor valid hex ({len(cleaned)} characters)") from None


def load_inputs(source: str, l2: bool | None) -> list[Input]:
    """Turn the INPUT argument into packets."""
    if source == "-":
        blob = sys.stdin.buffer.read()
        origin = "stdin"
    elif _is_file(source):
        blob = Path(source).read_bytes()
        origin = source
    else:
        data = _from_hex(source)
        return [Input("hex", data, _auto_l2(data) if l2 is None else l2)]
    if is_capture(blob):
        try:
            out = []
            for k, linktype, frame in read_capture(blob):
                data, eth = to_ipv6_or_l2(linktype, frame)
                out.append(Input(f"{origin}#{k}", data, eth if l2 is None else l2, True))
            return out
        except CaptureError as exc:
            raise _fail(f"{origin}: {exc}") from None
    if _looks_hex(blob):
        blob = _from_hex(blob.decode("ascii"))
    return [Input(origin, blob, _auto_l2(blob) if l2 is None else l2)]


def _is_file(source: str) -> bool:
    try:
        return Path(source).is_file()
    except OSError:      # e.g. a long hex string is "File name too long"
        return False


def _auto_l2(data: bytes) -> bool:
    return not (data and data[0] >> 4 == 6)


# ------------------------------------------------------------------------------------ decode
def describe(p: XcastPacket) -> list[str]:
    """Human, multi-line description of a decoded packet."""
    enc = "XCAST6 v2.0 (RH253)" if p.encoding == "xcast6" else "XCAST6 over UDP (XOU)"
    flags = [n for n, on in (("ANONYMOUS", p.anonymous), ("DONT_X2U", p.dont_x2u)) if on] or ["-"]
    lines = [
        f"  encoding   {enc}" + (f"   vlan {p.vlan}" if p.vlan is not None else ""),
        f"  outer      {_txt(p.src)} -> {_txt(p.dst)}  tc 0x{p.tc:02x}  flow 0x{p.flow:05x}  "
        f"hop-limit {p.hop_limit}  payload {len(p.data) - IP6_HLEN}",
        f"  inner      {_txt(p.inner_src)} -> {_txt(p.inner_dst)}  tc 0x{p.inner_tc:02x}  "
        f"flow 0x{p.inner_flow:05x}",
        f"  sender     {_txt(p.orig_src)}",
        f"  xcast      N {p.n}  live {p.bitmap.bit_count()}  flags 0x{p.flags:02x} ({','.join(flags)})  "
        f"icmpoff {p.icmpoff}",
        "    #  live  destination" + ("                               port" if p.ports else ""),
    ]
    for i in range(p.n):
        port = f"  {p.ports[i]}" if p.ports else ""
        lines.append(f"  {i:>3}  {'yes' if p.is_live(i) else 'no ':<4}  {_txt(p.dest(i)):<38}{port}".rstrip())
    ports = p.udp_ports
    if ports:
        plen = len(p.data) - p.payload_off
        ck = "ok" if p.udp_checksum_ok() else "BAD"
        lines.append(f"  transport  udp {ports[0]} -> {ports[1]}  checksum {ck}  payload {plen} bytes")
    else:
        lines.append(f"  transport  protocol {p.transport}  {len(p.data) - p.transport_off} bytes")
    return lines


InputArg = Annotated[str, typer.Argument(help="hex string, raw packet file, '-' for stdin, or pcap/pcapng")]
L2Opt = Annotated[
    bool | None, typer.Option("--l2/--no-l2", help="input has an Ethernet header (default: guess)")]


def _decode_cmd(
    input: InputArg,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    l2: L2Opt = None,
) -> None:
    """Decode XCAST6 packets, or say exactly why a buffer is not one."""
    inputs = load_inputs(input, l2)
    results = []
    valid = 0
    for inp in inputs:
        p = parse(inp.data, l2=inp.l2)
        if isinstance(p, XcastPacket):
            valid += 1
            results.append({"input": inp.label, "valid": True, "packet": p.to_dict()})
            if not as_json:
                typer.echo(f"{inp.label}: XCAST6 packet, {len(inp.data)} bytes")
                typer.echo("\n".join(describe(p)))
        else:
            kind = "not an XCAST6 packet" if p.reason in NOT_XCAST else "malformed XCAST6 packet"
            results.append({"input": inp.label, "valid": False, "reason": p.reason.value, "detail": p.detail})
            if not as_json:
                typer.echo(f"{inp.label}: {kind}: {p.reason.value}: {p.detail}")
    if as_json:
        # a capture gives a list (even of one), a single packet an object
        many = bool(inputs) and inputs[0].from_capture
        typer.echo(json.dumps(results if many or len(results) != 1 else results[0], indent=2))
    elif len(inputs) > 1:
        typer.echo(f"{len(inputs)} packets: {valid} XCAST6, {len(inputs) - valid} rejected")
    if not valid:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------ explain
def _source_map(sources: list[str]) -> tuple[dict[str, bytes], bytes | None]:
    per_if: dict[str, bytes] = {}
    default: bytes | None = None
    for s in sources:
        ifname, sep, addr = s.rpartition("=")
        try:
            packed = ipaddress.IPv6Address(addr).packed
        except ValueError:
            raise _fail(f"--source {s!r}: {addr!r} is not an IPv6 address") from None
        if sep:
            per_if[ifname] = packed
        else:
            default = packed
    return per_if, default


def _hop_text(nh: NextHop, dest: bytes) -> str:
    # connected routes: the brancher uses the destination itself as the next hop
    if nh.gateway is None or nh.gateway == dest:
        return "connected"
    return nh.gateway_text() or "connected"


def explain_result(p: XcastPacket, r: BranchResult) -> dict[str, Any]:
    """JSON-ready explanation of one branching."""
    dests = []
    for o in r.outcomes or []:
        dests.append({
            "index": o.index,
            "address": _txt(o.address),
            "status": o.status,
            "route": None if o.route is None else str(o.route.prefix),
            "next_hop": None if o.nexthop is None else _hop_text(o.nexthop, o.address),
            "interface": None if o.nexthop is None else o.nexthop.ifname,
            "copy": o.copy,
        })
    copies = []
    for k, c in enumerate(r.copies + r.local):
        copies.append({
            "copy": k,
            "kind": "local" if k >= len(r.copies) else ("x2u" if c.x2u else "xcast6"),
            "interface": c.nexthop.ifname,
            "next_hop": _hop_text(c.nexthop, c.data[OUTER_DST_OFF:OUTER_DST_END]),
            "destinations": list(c.dest_indexes),
            "outer_src": _txt(c.data[OUTER_SRC_OFF:OUTER_SRC_END]),
            "outer_dst": _txt(c.data[OUTER_DST_OFF:OUTER_DST_END]),
            "hop_limit": c.data[OUTER_HLIM_OFF],
            "length": len(c.data),
            "hex": c.data.hex(),
        })
    from engine.forwarding.icmp_errors import plan_error

    # The ICMPv6 error the engine would send (Packet Too Big needs the links' MTUs: not here).
    err = plan_error(r)
    icmp = None if err is None else {
        "type": err.kind.value, "to": _txt(err.dst), "refused": err.refused,
        "quoted_bytes": min(len(err.quote), MAX_QUOTE)}
    return {
        "packet": p.to_dict(),
        "destinations": dests,
        "copies": copies,
        "drops": {k.value: v for k, v in r.drops.items()},
        "detail": r.detail,
        "icmp_error": icmp,
    }


def render_explain(ex: dict[str, Any]) -> list[str]:
    copy_col = ["-" if d["copy"] is None else str(d["copy"]) for d in ex["destinations"]]
    lines = ["    #  destination                    status     route                  next hop"
             "                  interface        copy"]
    for d, cc in zip(ex["destinations"], copy_col, strict=True):
        lines.append(
            f"  {d['index']:>3}  {d['address']:<30} {d['status']:<10} {d['route'] or '-':<22} "
            f"{d['next_hop'] or '-':<25} {d['interface'] or '-':<16} {cc}"
        )
    lines.append(f"  copies: {len(ex['copies'])}")
    for c in ex["copies"]:
        lines.append(
            f"    [{c['copy']}] {c['kind']:<6} via {c['next_hop']} dev {c['interface']}  "
            f"{c['outer_src']} -> {c['outer_dst']}  hop-limit {c['hop_limit']}  {c['length']} bytes  "
            f"dests {c['destinations']}"
        )
    if ex["drops"]:
        drops = ", ".join(f"{k}={v}" for k, v in ex["drops"].items())
        lines.append(f"  drops: {drops}" + (f"  ({ex['detail']})" if ex["detail"] else ""))
    icmp = ex.get("icmp_error")
    if icmp:
        if icmp["refused"]:
            lines.append(f"  icmp: {icmp['type']} due, not sent: {icmp['refused']}")
        else:
            lines.append(f"  icmp: {icmp['type']} to {icmp['to']} (quoting {icmp['quoted_bytes']} bytes)")
    return lines


def _explain_cmd(
    input: InputArg,
    routes: Annotated[
        Path, typer.Option("--routes", "-r", help="route file: 'prefix next-hop interface' lines or JSON")
    ],
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="engine address for copies: ADDR (all links) or IFNAME=ADDR"),
    ] = None,
    local: Annotated[
        list[str] | None, typer.Option("--local", help="engine's own address (local delivery); repeatable")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable, copy bytes as hex")] = False,
    l2: L2Opt = None,
) -> None:
    """Show per destination the route, next hop and copy the engine would emit (ip route get for XCAST)."""
    try:
        table = load(routes)
    except RouteFileError as exc:
        raise _fail(str(exc)) from None
    per_if, default = _source_map(source or [])
    if default is None:
        default = ipaddress.IPv6Address(DEFAULT_ENGINE_SOURCE).packed
    try:
        local_set = frozenset(ipaddress.IPv6Address(x).packed for x in local or [])
    except ValueError as exc:
        raise _fail(f"--local: {exc}") from None
    brancher = Brancher(Fib(table), lambda ifname: per_if.get(ifname, default), local_set)
    out = []
    any_valid = False
    inputs = load_inputs(input, l2)
    for inp in inputs:
        p = parse(inp.data, l2=inp.l2)
        if isinstance(p, Reject):
            out.append({"input": inp.label, "valid": False, "reason": p.reason.value, "detail": p.detail})
            if not as_json:
                typer.echo(f"{inp.label}: rejected: {p}")
            continue
        any_valid = True
        ex = {"input": inp.label, "valid": True, **explain_result(p, brancher.branch(p, explain=True))}
        out.append(ex)
        if not as_json:
            typer.echo(f"{inp.label}: N {p.n}, {p.bitmap.bit_count()} live, hop-limit {p.hop_limit}, "
                       f"{len(table)} routes")
            typer.echo("\n".join(render_explain(ex)))
    if as_json:
        many = bool(inputs) and inputs[0].from_capture
        typer.echo(json.dumps(out if many or len(out) != 1 else out[0], indent=2))
    if not any_valid:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------ send
def _send_cmd(
    destinations: Annotated[
        list[str], typer.Argument(help="addresses/names, comma lists or {h1,2001:db8::2,h3}")
    ],
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="UDP destination port")] = 0,
    ports: Annotated[
        str | None, typer.Option("--ports", help="per-destination ports, comma separated (port list)")
    ] = None,
    sport: Annotated[
        int, typer.Option("--sport", min=0, max=65535, help="UDP source port (0: a random ephemeral port)")
    ] = 0,
    hop_limit: Annotated[int, typer.Option("--hop-limit", min=1, max=255)] = 64,
    payload: Annotated[str | None, typer.Option("--payload", help="payload text")] = None,
    payload_file: Annotated[str | None, typer.Option("--payload-file", help="file, '-' = stdin")] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="packets to send")] = 1,
    rate: Annotated[float, typer.Option("--rate", min=0.0, help="packets per second (0 = no pacing)")] = 0.0,
    source: Annotated[str | None, typer.Option("--source", help="sender address (default: kernel's)")] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i", help="bind to this interface")] = None,
    xou: Annotated[bool, typer.Option("--xou", help="use the XCAST6-over-UDP encoding")] = False,
    anonymous: Annotated[bool, typer.Option("--anonymous", help="set ANONYMOUS")] = False,
    dont_x2u: Annotated[bool, typer.Option("--dont-x2u", help="set DONT_X2U")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the packet as hex, do not send")] = False,
    pmtu: Annotated[bool, typer.Option(
        "--pmtu", help="the kernel writes the outer header and applies the path MTU (Packet Too Big)",
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (errors too)")] = False,
) -> None:
    """Send XCAST6 packets from this host (xcast_sendto) through a raw IPv6 socket."""
    from engine.tools.xcast_send import SendError, SendRequest, build_packet, path_mtu, resolve_all, send

    try:
        if payload is not None and payload_file is not None:
            raise SendError("give --payload or --payload-file, not both")
        if payload_file == "-":
            body = sys.stdin.buffer.read()
        elif payload_file is not None:
            try:
                body = Path(payload_file).read_bytes()
            except OSError as exc:
                raise SendError(f"cannot read payload file {payload_file}: {exc.strerror}") from None
        else:
            body = (payload or "").encode()
        dests = resolve_all(destinations)
        port_list = None
        if ports is not None:
            try:
                port_list = [int(x) for x in ports.split(",")]
            except ValueError:
                raise SendError(f"--ports {ports!r}: not a comma-separated list of numbers") from None
            if len(port_list) != len(dests):
                raise SendError(f"--ports has {len(port_list)} entries for {len(dests)} destinations")
            if any(not 0 < p < 65536 for p in port_list):
                raise SendError("--ports: every port must be 1..65535")
        src = None
        if source is not None:
            try:
                src = ipaddress.IPv6Address(source).packed
            except ValueError:
                raise SendError(f"--source {source!r} is not an IPv6 address") from None
        if sport == 0:
            sport = random.randint(49152, 65535)
        req = SendRequest(dests=dests, payload=body, sport=sport, dport=port, ports=port_list,
                          hop_limit=hop_limit, anonymous=anonymous, dont_x2u=dont_x2u, xou=xou, source=src,
                          count=count, rate=rate, interface=interface, pmtu=pmtu)
        if dry_run:
            hexed = build_packet(req).hex()
            typer.echo(json.dumps({"sent": 0, "hex": hexed}) if as_json else hexed)
            return
    except SendError as exc:     # the request itself is wrong
        raise clikit.fail(str(exc), clikit.EXIT_USAGE, as_json) from None
    try:
        n, nbytes = send(req)
        if pmtu:
            pkt = build_packet(req)
            dst = _txt(pkt[OUTER_DST_OFF:OUTER_DST_END])
            mtu = path_mtu(dst)
            if mtu is not None and mtu < len(pkt):
                typer.echo(f"note: Packet Too Big: the path MTU to {dst} is now {mtu}; packets of "
                           f"{len(pkt)} bytes will be refused, make them {mtu} bytes at most", err=True)
    except SendError as exc:     # the kernel refused (no raw socket, no route, ...)
        raise clikit.fail(str(exc), clikit.EXIT_FAILED, as_json) from None
    if as_json:
        clikit.dump({"sent": n, "bytes": nbytes, "destinations": [_txt(d) for d in dests]})
    else:
        typer.echo(f"sent {n} packet(s), {nbytes} bytes, {len(dests)} destinations")


# ------------------------------------------------------------------------------------ OAM
def _oam_setup(destinations: list[str], source: str | None, interface: str | None, as_json: bool,
               ) -> tuple[Any, list[bytes], dict[bytes, str]]:
    """Resolve destinations and open the raw sockets; any problem ends the command (exit 1)."""
    from engine.tools.xcast_send import SendError

    try:
        return _oam_open(destinations, source, interface)
    except SendError as exc:
        raise clikit.fail(str(exc), clikit.EXIT_FAILED, as_json) from None


def _oam_open(destinations: list[str], source: str | None, interface: str | None,
              ) -> tuple[Any, list[bytes], dict[bytes, str]]:
    from engine.tools.oam import Prober, RawTransport
    from engine.tools.xcast_send import SendError, pick_source, resolve, resolve_all, split_destinations

    dests = resolve_all(destinations)
    names: dict[bytes, str] = {}
    for tok in split_destinations(destinations):
        try:
            ipaddress.IPv6Address(tok)
        except ValueError:
            for d in resolve(tok):
                names.setdefault(d, f"{tok} ({_txt(d)})")
    if source is not None:
        try:
            src = ipaddress.IPv6Address(source).packed
        except ValueError:
            raise SendError(f"--source {source!r} is not an IPv6 address") from None
    else:
        src = pick_source(dests[0])
    return Prober(RawTransport(src, interface)), dests, names


def _traceroute_cmd(
    destinations: Annotated[list[str], typer.Argument(help="addresses/names, comma lists or {h1,h2,...}")],
    max_hops: Annotated[int, typer.Option("--max-hops", "-m", min=1, max=255)] = 16,
    queries: Annotated[int, typer.Option("--queries", "-q", min=1, max=10, help="probes per hop")] = 3,
    wait: Annotated[float, typer.Option("--wait", "-w", min=0.01, help="seconds to wait per hop")] = 1.0,
    source: Annotated[str | None, typer.Option("--source", help="sender address (default: kernel's)")] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i", help="bind to this interface")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """XCAST6 traceroute: UDP probes with growing hop limit; prints the branch tree (needs root)."""
    from engine.tools.oam import render_tree, trace_json, traceroute

    prober, dests, names = _oam_setup(destinations, source, interface, as_json)
    try:
        res = traceroute(prober, dests, max_hops=max_hops, queries=queries, wait=wait)
    except OSError as exc:
        raise clikit.fail(f"probe failed: {exc.strerror or exc}", clikit.EXIT_FAILED, as_json) from None
    finally:
        prober.transport.close()
    if as_json:
        typer.echo(json.dumps(trace_json(res), indent=2))
    else:
        typer.echo("\n".join(render_tree(res, names)))
    if not all(res.reached(d) for d in dests):
        raise typer.Exit(clikit.EXIT_FAILED)


def _ping_cmd(
    destinations: Annotated[list[str], typer.Argument(help="addresses/names, comma lists or {h1,h2,...}")],
    count: Annotated[int, typer.Option(
        "--count", "-n", min=1, help="rounds (-n as in send: -c is --config everywhere)")] = 5,
    interval: Annotated[float, typer.Option("--interval", "-I", min=0.0, help="seconds per round")] = 1.0,
    wait: Annotated[float, typer.Option("--wait", "-w", min=0.01, help="seconds to wait for answers")] = 1.0,
    hop_limit: Annotated[int, typer.Option("--hop-limit", min=1, max=255)] = 64,
    source: Annotated[str | None, typer.Option("--source", help="sender address (default: kernel's)")] = None,
    interface: Annotated[str | None, typer.Option("--interface", "-i", help="bind to this interface")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """XCAST6 ping: one probe per round to all destinations; per-destination loss and RTT (needs root)."""
    from engine.tools.oam import Reply, ping, render_ping, txt

    prober, dests, names = _oam_setup(destinations, source, interface, as_json)

    def show(k: int, reps: list[Reply]) -> None:
        got = sorted((r for r in reps if r.kind == "reached"), key=lambda r: dests.index(r.dests[0]))
        parts = ", ".join(f"{names.get(r.dests[0], txt(r.dests[0]))} {r.rtt_ms:.3f} ms" for r in got)
        typer.echo(f"round {k + 1}: {len(got)}/{len(dests)} answered  {parts}")

    try:
        res = ping(prober, dests, count=count, interval=interval, wait=wait, hop_limit=hop_limit,
                   on_round=None if as_json else show)
    except OSError as exc:
        raise clikit.fail(f"probe failed: {exc.strerror or exc}", clikit.EXIT_FAILED, as_json) from None
    finally:
        prober.transport.close()
    if as_json:
        typer.echo(json.dumps({"source": txt(res.source), "rounds": res.rounds,
                               "destinations": [res.stats(d) for d in dests]}, indent=2))
    else:
        typer.echo("\n".join(render_ping(res, names)))
    if any(res.stats(d)["received"] == 0 for d in dests):
        raise typer.Exit(clikit.EXIT_FAILED)


# ------------------------------------------------------------------------------------ demo
DEMO_ROUTES = """\
# prefix              next-hop     router interface
2001:db8:10::/48      fe80::a      ge-0/0/1.0
2001:db8:20::/48      fe80::b      ge-0/0/2.0
2001:db8:21::/48      fe80::b      ge-0/0/2.0
2001:db8:30::/64      connected    ge-0/0/3.0
"""
DEMO_DESTS = ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:20::1", "2001:db8:21::7",
              "2001:db8:30::5", "2001:db8:30::6", "2001:db8:99::1"]


def run_demo(echo: Any = typer.echo) -> dict[str, Any]:
    """Offline demonstration: build, decode and branch one packet over a small table."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6

    from engine.wire.codec import build_xcast

    routes: list[Route] = parse_text(DEMO_ROUTES, "demo-routes")
    ifnames = sorted({r.nexthops[0].ifname for r in routes})
    engine_addr = {ifn: ipaddress.IPv6Address(f"2001:db8:e{k}::1").packed for k, ifn in enumerate(ifnames, 1)}
    sender = ipaddress.IPv6Address("2001:db8:ff::1").packed
    dests = [ipaddress.IPv6Address(d).packed for d in DEMO_DESTS]
    echo("== 1. the router's table (as sync would mirror it)")
    echo(DEMO_ROUTES.rstrip())
    echo("\n== 2. a sender builds one XCAST6 packet for 7 destinations (UDP 5000 -> 6000)")
    pkt = build_xcast(sender, dests, b"hello, explicit multicast", sport=5000, dport=6000, hop_limit=16)
    echo(f"  {len(pkt)} bytes (paste into `xcast6-engine decode` or `explain`):")
    echo(f"  {pkt.hex()}")
    echo("\n== 3. the engine decodes it")
    p = parse(pkt)
    assert isinstance(p, XcastPacket)
    echo("\n".join(describe(p)))
    echo("\n== 4. and branches it: one copy per next hop, X2U for single destinations")
    br = Brancher(Fib(routes), engine_addr.get)
    r = br.branch(p, explain=True)
    ex = explain_result(p, r)
    echo("\n".join(render_explain(ex)))
    echo("\n== 5. the copies, decoded again")
    for k, c in enumerate(r.copies):
        if c.x2u:
            ip = IPv6(c.data)
            udp = ip[UDP]
            ck = udp.chksum
            del udp.chksum
            ok = IPv6(bytes(ip))[UDP].chksum == ck
            echo(f"  [{k}] X2U unicast {ip.src} -> {ip.dst} hop-limit {ip.hlim} udp {udp.sport}->{udp.dport} "
                 f"checksum 0x{ck:04x} {'valid' if ok else 'INVALID'} (checked by scapy)")
        else:
            q = parse(c.data)
            assert isinstance(q, XcastPacket)
            echo(f"  [{k}] XCAST6 {_txt(q.src)} -> {_txt(q.dst)} hop-limit {q.hop_limit} "
                 f"live {q.live_indexes} bitmap {q.bitmap:#x}")
    echo("\n== 6. counters: " + (", ".join(f"{k}={v}" for k, v in ex["drops"].items()) or "no drops"))
    return ex


def _demo_cmd(as_json: Annotated[bool, typer.Option("--json", help="print the explanation as JSON")] = False,
              ) -> None:
    """Offline demonstration: build an XCAST6 packet, decode it, branch it over a small table."""
    if as_json:
        typer.echo(json.dumps(run_demo(lambda *_: None), indent=2))
    else:
        run_demo()


def register(app: typer.Typer) -> None:
    """Add the packet-tool commands to the root app."""
    app.command("decode")(_decode_cmd)
    app.command("explain")(_explain_cmd)
    app.command("send")(_send_cmd)
    app.command("traceroute")(_traceroute_cmd)
    app.command("ping")(_ping_cmd)
    app.command("demo")(_demo_cmd)
