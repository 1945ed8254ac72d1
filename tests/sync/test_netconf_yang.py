"""The test server's ietf data is valid YANG data: checked with libyang's ``yanglint`` against the
ietf-routing / ietf-ipv6-unicast-routing / ietf-interfaces modules shipped in Debian's
libyuma-base, on the reply actually received over NETCONF (full ``<get>`` and the filtered
``<get>`` NetconfSource sends)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from lab.netconf_server.lab import PASSWORD, NetconfLab
from sync import netconf_ietf
from sync.netconf import PASSWORD_ENV, NetconfSource

pytestmark = [pytest.mark.root, pytest.mark.netns]
MODULES = Path("/usr/share/yuma/modules/ietf")
SCHEMAS = ["ietf-routing@2016-11-04.yang", "ietf-ipv6-unicast-routing@2016-11-04.yang",
           "ietf-interfaces@2014-05-08.yang", "iana-if-type@2014-05-08.yang"]


@pytest.fixture(scope="module")
def lab() -> Iterator[NetconfLab]:
    lab = NetconfLab("y").up()
    try:
        lab.fill_basic()
        lab.fill_many(200)
        yield lab
    finally:
        lab.down()


def yanglint(data_file: Path, kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["yanglint", "-p", str(MODULES), "-F", "ietf-routing:multiple-ribs", "-F", "ietf-interfaces:if-mib",
         "-t", kind, *(str(MODULES / s) for s in SCHEMAS), str(data_file)],
        capture_output=True, text=True,
    )


def data_of(raw: str, out: Path) -> Path:
    root = etree.fromstring(raw.encode())
    data = root.find("{urn:ietf:params:xml:ns:netconf:base:1.0}data")
    assert data is not None and len(data) >= 2
    out.write_text("".join(etree.tounicode(c) for c in data))
    return out


def test_replies_validate_with_yanglint(lab: NetconfLab, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    srv = lab.start_server()
    src = NetconfSource.from_url(lab.url(srv, "ietf"))
    try:
        full = data_of(src._session.rpc(etree.Element("get"), "get"), tmp_path / "full.xml")
        op = etree.Element("get")
        op.append(netconf_ietf.get_filter())
        filtered = data_of(src._session.rpc(op, "get filtered"), tmp_path / "filtered.xml")
    finally:
        src.close()
    done = yanglint(full, "data")
    assert done.returncode == 0, done.stderr
    done = yanglint(filtered, "get")
    assert done.returncode == 0, done.stderr
    # The validator is really checking: a dangling interface reference is rejected.
    broken = tmp_path / "broken.xml"
    text = full.read_text()
    broken.write_text(text.replace(">xnc-ge1</outgoing-interface>", ">ge-9/9/9</outgoing-interface>"))
    done = yanglint(broken, "data")
    assert done.returncode != 0 and "leafref" in done.stderr
