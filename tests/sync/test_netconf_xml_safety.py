"""NETCONF replies are parsed as untrusted XML (issue 15).

Before: the pull parser ran with lxml's defaults (internal entities substituted) and
``huge_tree=True`` (libxml2's size and amplification guards off), with no cap on the reply.
A reply could define an entity whose text became a route, and an oversized reply had no
clear error.  Now: no entity is substituted, no DTD or network is loaded, a ``<!DOCTYPE>`` is
refused, and a reply above MAX_REPLY_BYTES is a NetconfReplyError -> SourceError naming its size.
"""

from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sync import netconf_ietf, netconf_junos, netconf_xml
from sync.netconf import NetconfSource, harden_ncclient
from sync.netconf_xml import NetconfReplyError
from sync.source import SourceError
from tests.sync.test_netconf_parse import entry, ietf_reply, nh, reply, route, rt, table

GOOD_JUNOS = reply(table(rt("2001:db8:1::/64", entry(nh=nh("fe80::1", "ge-0/0/0.0")))))
GOOD_IETF = ietf_reply(route("2001:db8:1::/64", "<outgoing-interface>eth0</outgoing-interface>"))
INJECTED = "2001:db8:bad::/48"


def _with_doctype(doc: str, subset: str) -> str:
    return f"<!DOCTYPE rpc-reply [{subset}]>\n{doc}"


def test_internal_entity_is_not_substituted_and_the_reply_is_refused() -> None:
    # A reply defining its own text: with substitution the route below would be INJECTED.
    body = reply(table(rt("&dest;", entry(nh=nh("fe80::1", "ge-0/0/0.0")))))
    doc = _with_doctype(body, f'<!ENTITY dest "{INJECTED}">')
    seen: list[str] = []
    with pytest.raises(NetconfReplyError, match="<!DOCTYPE>") as info:
        netconf_xml.stream_records(
            doc,
            "rt",
            lambda e: seen.append(netconf_xml.child_text(e, "rt-destination")),
            context="get-route-information",
        )
    assert seen == [""], seen  # the handler saw the entity reference, never its text
    assert INJECTED not in str(info.value)
    with pytest.raises((NetconfReplyError, ValueError)) as info2:
        netconf_junos.parse_routes(doc)
    assert INJECTED not in str(info2.value)


def test_external_entity_is_not_loaded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(INJECTED)
    for body in (
        reply(table(rt("&xxe;", entry()))),
        ietf_reply(route("&xxe;", "<special-next-hop>blackhole</special-next-hop>")),
    ):
        doc = _with_doctype(body, f'<!ENTITY xxe SYSTEM "file://{secret}">')
        for parse in (netconf_junos.parse_routes, netconf_ietf.parse_reply):
            with pytest.raises((NetconfReplyError, ValueError)) as info:
                parse(doc)  # type: ignore[operator]
            assert INJECTED not in str(info.value)


def test_billion_laughs_is_not_expanded() -> None:
    lol = '<!ENTITY lol0 "lololololol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    doc = _with_doctype(reply(table(rt("&lol9;", entry()))), lol)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises((NetconfReplyError, ValueError)):
        netconf_junos.parse_routes(doc)
    assert time.perf_counter() - t0 < 1.0
    # 10^9 expanded "lol"s would be GBs; allow noise only
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000  # KiB


def test_reply_above_the_cap_is_a_source_error_naming_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(GOOD_JUNOS.encode())
    monkeypatch.setattr(netconf_xml, "MAX_REPLY_BYTES", size - 1)
    with pytest.raises(NetconfReplyError, match=rf"reply is {size} bytes, more than the {size - 1} bytes"):
        netconf_junos.parse_routes(GOOD_JUNOS)
    # streamed in slices: counted as it comes, refused at the slice that crosses the cap
    chunks = [GOOD_JUNOS.encode()[i : i + 64] for i in range(0, size, 64)]
    with pytest.raises(NetconfReplyError, match=r"more than the"):
        netconf_junos.parse_routes(iter(chunks))
    with pytest.raises(NetconfReplyError, match=r"more than the"):
        netconf_ietf.parse_reply(GOOD_IETF.encode() + b" " * size)
    # what the source makes of it: a SourceError, the last good table is kept
    source = NetconfSource.from_url("netconf://ops@[2001:db8::1]?flavor=junos")
    with pytest.raises(SourceError, match=rf"reply is {size} bytes"):
        source._parse("routes", lambda: netconf_junos.parse_routes(GOOD_JUNOS))
    monkeypatch.setattr(netconf_xml, "MAX_REPLY_BYTES", size)
    assert len(netconf_junos.parse_routes(GOOD_JUNOS).routes) == 1  # at the cap: parsed


def test_default_cap_and_parser_options_are_explicit() -> None:
    assert netconf_xml.MAX_REPLY_BYTES == 512 << 20
    assert netconf_xml.safe_parser_options() == {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
    }


def test_ncclient_parses_with_the_safe_options_too() -> None:
    from ncclient import xml_ as ncxml

    harden_ncclient()
    hello = _with_doctype(
        '<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><session-id>&x;</session-id></hello>',
        f'<!ENTITY x "{INJECTED}">',
    ).replace("rpc-reply", "hello")
    for huge in (False, True):
        elem = ncxml.to_ele(hello, huge_tree=huge)
        assert INJECTED not in (elem[0].text or "") and INJECTED not in ncxml.to_xml(elem)


# -- fuzz: whatever the router sends, the parsers fail only with their own errors ---------------

ALLOWED = (NetconfReplyError, ValueError)  # JunosParseError and IetfParseError are ValueErrors


def _mutate(doc: bytes, data: st.DataObject) -> bytes:
    buf = bytearray(doc)
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup"]), label="kind")
        at = data.draw(st.integers(0, max(0, len(buf) - 1)), label="at")
        if kind == "flip" and buf:
            buf[at] = data.draw(st.integers(0, 255), label="byte")
        elif kind == "delete":
            del buf[at : at + data.draw(st.integers(1, 16), label="n")]
        elif kind == "insert":
            buf[at:at] = data.draw(
                st.sampled_from(
                    [
                        b"<",
                        b">",
                        b"</rt>",
                        b"<rt>",
                        b"&amp;",
                        b"&x;",
                        b"<!DOCTYPE a>",
                        b"]]>",
                        b"\x00",
                        b"\xff",
                        b"<rpc-error><error-severity>error</error-severity></rpc-error>",
                        b"::/0",
                        b"/129",
                    ]
                ),
                label="insert",
            )
        elif kind == "truncate":
            del buf[at:]
        elif kind == "dup":
            buf[at:at] = buf[at : at + data.draw(st.integers(1, 200), label="n")]
    return bytes(buf)


def _parsers(raw: bytes) -> None:
    for parse in (
        netconf_junos.parse_routes,
        netconf_junos.parse_interfaces,
        lambda r: netconf_junos.parse_summary(r),
        netconf_ietf.parse_reply,
    ):
        with contextlib.suppress(ALLOWED):
            parse(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from([GOOD_JUNOS.encode(), GOOD_IETF.encode()]), data=st.data())
def test_fuzz_mutated_replies_raise_only_parse_errors(base: bytes, data: st.DataObject) -> None:
    _parsers(_mutate(base, data))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
@example(raw=b"")
@example(raw=b"<rpc-reply/>")
def test_fuzz_random_bytes_raise_only_parse_errors(raw: bytes) -> None:
    _parsers(raw)
