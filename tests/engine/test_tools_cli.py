"""CLI: decode / explain / demo / send (dry-run and errors), route files, pcap input."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api import main as cli
from engine.tools.pcapread import read_capture
from engine.tools.routefile import RouteFileError, parse_json, parse_text
from engine.tools.xcast_send import SendError, resolve_all, split_destinations
from engine.wire.codec import build_l2, build_xcast
from tests.engine.helpers import SENDER, a

runner = CliRunner()
cli._register()

DESTS = [a("2001:db8:1::1"), a("2001:db8:1::2"), a("2001:db8:2::1"), a("2001:db8:3::1"), a("2001:db8:9::9")]
PKT = build_xcast(SENDER, DESTS, b"cli", sport=10, dport=20, hop_limit=5)
ROUTES = """\
2001:db8:1::/48  fe80::1    ge-0/0/1.0
2001:db8:2::/48  fe80::2    ge-0/0/2.0   # comment
2001:db8:3::/64  connected  ge-0/0/3.0
"""


def invoke(*args: str, input: bytes | None = None) -> tuple[int, str]:
    r = runner.invoke(cli.app, list(args), input=input)
    return r.exit_code, r.output


def test_decode_hex_human() -> None:
    code, out = invoke("decode", PKT.hex())
    assert code == 0, out
    assert "XCAST6 v2.0 (RH253)" in out and "2001:db8:9::9" in out and "udp 10 -> 20" in out


def test_decode_json_fields() -> None:
    code, out = invoke("decode", "--json", PKT.hex())
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True
    p = doc["packet"]
    assert p["outer"]["hop_limit"] == 5 and p["n"] == 5 and p["original_source"] == "2001:db8:ff::1"
    assert [d["live"] for d in p["destinations"]] == [True] * 5
    assert p["payload_length"] == 3


def test_decode_reject_names_reason(tmp_path: Path) -> None:
    bad = bytearray(PKT)
    bad[82] = 0
    code, out = invoke("decode", bytes(bad).hex())
    assert code == 1 and "wrong_routing_type" in out and "routing type 0" in out
    code, out = invoke("decode", "--json", bytes(bad).hex())
    assert json.loads(out)["reason"] == "wrong_routing_type"


def test_decode_raw_file_stdin_and_l2(tmp_path: Path) -> None:
    f = tmp_path / "pkt.bin"
    f.write_bytes(build_l2(PKT, dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6, vlan=42))
    code, out = invoke("decode", str(f))
    assert code == 0 and "vlan 42" in out
    code, out = invoke("decode", "-", input=PKT)
    assert code == 0 and "XCAST6" in out


def _pcap(frames: list[bytes], linktype: int = 1) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for k, fr in enumerate(frames):
        out += struct.pack("<IIII", k, 0, len(fr), len(fr)) + fr
    return out


def test_decode_pcap_every_packet(tmp_path: Path) -> None:
    f = tmp_path / "cap.pcap"
    eth = build_l2(PKT, dst_mac=b"\x02" * 6, src_mac=b"\x04" * 6)
    junk = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + b"\x45" + bytes(40)   # an IPv4 frame
    f.write_bytes(_pcap([eth, junk, eth]))
    # frames numbered as Wireshark/tshark number them (from 1)
    assert [k for k, _, _ in read_capture(f.read_bytes())] == [1, 2, 3]
    if shutil.which("tshark"):
        numbers = subprocess.run(["tshark", "-r", str(f), "-T", "fields", "-e", "frame.number"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert numbers == ["1", "2", "3"]
    code, out = invoke("decode", str(f))
    assert code == 0
    assert "cap.pcap#2: not an XCAST6 packet: not_ipv6_ethertype" in out
    assert "3 packets: 2 XCAST6, 1 rejected" in out
    code, out = invoke("decode", "--json", str(f))
    assert [d["valid"] for d in json.loads(out)] == [True, False, True]
    one = tmp_path / "one.pcap"
    one.write_bytes(_pcap([eth]))
    code, out = invoke("decode", "--json", str(one))
    assert isinstance(json.loads(out), list)          # a capture is always a list


def test_explain_text_and_json(tmp_path: Path) -> None:
    rf = tmp_path / "routes.txt"
    rf.write_text(ROUTES)
    code, out = invoke("explain", PKT.hex(), "--routes", str(rf), "--source", "2001:db8:e::1")
    assert code == 0, out
    assert "no_route" in out and "connected" in out and "copies: 3" in out
    code, out = invoke("explain", PKT.hex(), "-r", str(rf), "-s", "2001:db8:e::1",
                       "-s", "ge-0/0/1.0=2001:db8:e1::1", "--json")
    doc = json.loads(out)
    st = {d["address"]: (d["status"], d["interface"], d["copy"]) for d in doc["destinations"]}
    assert st["2001:db8:1::1"] == ("forwarded", "ge-0/0/1.0", 0)
    assert st["2001:db8:1::2"] == ("forwarded", "ge-0/0/1.0", 0)
    assert st["2001:db8:2::1"] == ("x2u", "ge-0/0/2.0", 1)
    assert st["2001:db8:3::1"] == ("x2u", "ge-0/0/3.0", 2)
    assert st["2001:db8:9::9"] == ("no_route", None, None)
    assert doc["drops"] == {"no_route": 1}
    c0 = doc["copies"][0]
    assert c0["outer_src"] == "2001:db8:e1::1" and c0["hop_limit"] == 4
    # the hex bytes are a real packet: decode it again
    code, out = invoke("decode", "--json", c0["hex"])
    assert json.loads(out)["packet"]["bitmap"].startswith("03")


def test_explain_names_the_icmp_error(tmp_path: Path) -> None:
    from engine.wire.codec import build_xcast

    rf = tmp_path / "routes.txt"
    rf.write_text(ROUTES)
    src = bytes.fromhex("20010db800ff00000000000000000001")
    pkt = build_xcast(src, [bytes.fromhex("20010db8000100000000000000000001")], b"x", hop_limit=1)
    code, out = invoke("explain", pkt.hex(), "--routes", str(rf), "--source", "2001:db8:e::1")
    assert code == 0, out
    assert f"icmp: time_exceeded to 2001:db8:ff::1 (quoting {len(pkt)} bytes)" in out
    code, out = invoke("explain", pkt.hex(), "-r", str(rf), "-s", "2001:db8:e::1", "--json")
    assert json.loads(out)["icmp_error"] == {"type": "time_exceeded", "to": "2001:db8:ff::1", "refused": None,
                                             "quoted_bytes": len(pkt)}


def test_explain_bad_route_file(tmp_path: Path) -> None:
    rf = tmp_path / "routes.txt"
    rf.write_text("2001:db8:1::/48 fe80::1 ge-0/0/1\n2001:db8:2::/48 nothere ge-0/0/2\n")
    code, out = invoke("explain", PKT.hex(), "--routes", str(rf))
    assert code == 2 and "routes.txt:2: next-hop 'nothere'" in out


def test_route_file_forms() -> None:
    rs = parse_text("2001:db8::/32 fe80::1 a\n2001:db8::/32 fe80::2 b\n")
    assert len(rs) == 1 and len(rs[0].nexthops) == 2            # ECMP members
    js = parse_json('[{"prefix": "2001:db8::/32", "next_hop": "connected", "interface": "x"}]')
    assert js[0].nexthops[0].gateway is None
    for bad, msg in [("2001:db8::/32 fe80::1", "expected 'prefix next-hop interface'"),
                     ("2001:db8::1/32 fe80::1 x", "prefix '2001:db8::1/32'"),
                     ("10.0.0.0/8 fe80::1 x", "not an IPv6 prefix")]:
        with pytest.raises(RouteFileError, match=msg):
            parse_text(bad)
    with pytest.raises(RouteFileError, match="route #0: field 'interface'"):
        parse_json('[{"prefix": "2001:db8::/32"}]')


def test_demo_runs_and_is_correct() -> None:
    code, out = invoke("demo")
    assert code == 0
    assert "INVALID" not in out and out.count("valid (checked by scapy)") == 2
    code, out = invoke("demo", "--json")
    doc = json.loads(out)
    assert doc["drops"] == {"no_route": 1} and len(doc["copies"]) == 4


def test_send_dry_run_builds_packet() -> None:
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", "--port", "9000",
                       "--hop-limit", "7",
                       "--payload", "hi", "{2001:db8:1::1,2001:db8:2::1}", "2001:db8:3::1")
    assert code == 0, out
    code, out2 = invoke("decode", "--json", out.strip())
    p = json.loads(out2)["packet"]
    assert [d["address"] for d in p["destinations"]] == ["2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1"]
    assert p["outer"]["hop_limit"] == 7 and p["transport"]["dport"] == 9000


def test_send_dry_run_xou_and_ports() -> None:
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", "--xou",
                       "2001:db8:1::1,2001:db8:2::1")
    assert code == 0
    code, out2 = invoke("decode", "--json", out.strip())
    assert json.loads(out2)["packet"]["encoding"] == "xou"
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", "--ports", "1,2",
                       "2001:db8:1::1,2001:db8:2::1")
    code, out2 = invoke("decode", "--json", out.strip())
    assert [d["port"] for d in json.loads(out2)["packet"]["destinations"]] == [1, 2]


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ([",".join(f"2001:db8:1::{i + 1:x}" for i in range(127))], "127 destinations: one XCAST6 packet"),
        (["fe80::1"], "fe80::1: fe80::1 is not a global unicast address"),
        (["ff0e::1"], "is not a global unicast address"),
        (["xcore-no-such-host.invalid"], "xcore-no-such-host.invalid: cannot resolve"),
        (["10.1.2.3"], "IPv4 addresses cannot be XCAST6 destinations"),
        (["{2001:db8::1,2001:db8::2"], "unbalanced braces"),
        (["fe80::1%lo"], "is not a global unicast address"),
        (["--ports", "1,2", "2001:db8::1"], "--ports has 2 entries for 1 destinations"),
    ],
)
def test_send_errors_are_one_line(args: list[str], msg: str) -> None:
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", *args)
    assert code == 2            # a wrong request is a usage error in the one exit-code table
    assert msg in out and out.count("\n") == 1 and out.startswith("xcast6-engine: ")
    code, out = invoke("send", "--dry-run", "--json", "--source", "2001:db8:ff::1", *args)
    assert code == 2 and msg in json.loads(out)["error"]["message"]


def test_send_count_is_n_and_c_is_not_count() -> None:
    """-c means --config everywhere; send's count is --count/-n."""
    code, out = invoke("send", "--dry-run", "-n", "3", "--source", "2001:db8:ff::1", "2001:db8::1")
    assert code == 0
    code, out = invoke("send", "--dry-run", "-c", "3", "--source", "2001:db8:ff::1", "2001:db8::1")
    assert code == 2 and "No such option: -c" in out
    code, out = invoke("send", "--dry-run", "--json", "--source", "2001:db8:ff::1", "2001:db8::1")
    assert code == 0 and json.loads(out)["hex"].startswith("6")


def test_multi_address_notation_and_names() -> None:
    assert split_destinations(["{h1,2001:db8::2,h3}", "h4"]) == ["h1", "2001:db8::2", "h3", "h4"]
    assert split_destinations(["{h1;h2}"]) == ["h1", "h2"]        # the paper's ';' wording

    def hosts(name: str, *_: object) -> list[tuple[object, ...]]:
        table = {"h1": ["2001:db8:a::1"], "h3": ["2001:db8:a::3"], "lo6": ["::1"],
                 "multi": ["2001:db8:b::1", "2001:db8:b::2", "2001:db8:a::1"]}
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", (addr, 0, 0, 0)) for addr in table[name]]

    got = resolve_all(["{h1,2001:db8::2,h3}"], resolver=hosts)
    assert got == [a("2001:db8:a::1"), a("2001:db8::2"), a("2001:db8:a::3")]
    # a name stands for all its AAAA records (paper, Table 1); repeats are listed once
    got = resolve_all(["{h1,multi}", "2001:db8:a::1"], resolver=hosts)
    assert got == [a("2001:db8:a::1"), a("2001:db8:b::1"), a("2001:db8:b::2")]
    with pytest.raises(SendError, match="h9: cannot resolve"):
        resolve_all(["{h1,h9}"], resolver=hosts)
    with pytest.raises(SendError, match="lo6: ::1 is not a global unicast address"):
        resolve_all(["h1,lo6"], resolver=hosts)


def test_send_without_privilege_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.tools.xcast_send as sender

    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sender.socket, "socket", refuse)
    code, out = invoke("send", "--source", "2001:db8:ff::1", "2001:db8::1")
    assert code == 1 and "needs CAP_NET_RAW" in out


def test_send_payload_from_stdin_and_file(tmp_path: Path) -> None:
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", "--payload-file", "-",
                       "2001:db8:1::1", input=b"from stdin")
    assert code == 0
    _, dec = invoke("decode", "--json", out.strip())
    assert json.loads(dec)["packet"]["payload_length"] == len(b"from stdin")
    f = tmp_path / "payload.bin"
    f.write_bytes(bytes(range(256)) * 4)
    code, out = invoke("send", "--dry-run", "--source", "2001:db8:ff::1", "--payload-file", str(f),
                       "2001:db8:1::1")
    _, dec = invoke("decode", "--json", out.strip())
    assert json.loads(dec)["packet"]["payload_length"] == 1024
    code, out = invoke("send", "--dry-run", "--payload-file", str(tmp_path / "missing"), "2001:db8:1::1")
    assert code == 2 and "cannot read payload file" in out      # a bad input file: usage
