"""The test server's RFC 6241 subtree filter (selection, containment, content match, several roots)."""

from __future__ import annotations

from lxml import etree

from lab.netconf_server.subtree import subtree_filter

DATA = """<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<top xmlns="urn:x"><users><user><name>a</name><uid>1</uid><shell>sh</shell></user>
<user><name>b</name><uid>2</uid><shell>zsh</shell></user></users><motd>hi</motd></top>
<other xmlns="urn:y"><leaf>1</leaf></other></data>"""


def run(flt: str) -> str:
    data = etree.fromstring(DATA)
    result = subtree_filter(data, etree.fromstring(f'<filter type="subtree">{flt}</filter>'))
    return etree.tostring(result).decode().replace("\n", "")


def test_selection_containment_and_several_roots() -> None:
    out = run('<top xmlns="urn:x"><users><user><name/></user></users></top><other xmlns="urn:y"/>')
    assert "<name>a</name>" in out and "<name>b</name>" in out and "uid" not in out and "motd" not in out
    assert "<leaf>1</leaf>" in out


def test_content_match_selects_one_entry_whole() -> None:
    out = run('<top xmlns="urn:x"><users><user><name>b</name></user></users></top>')
    assert "<shell>zsh</shell>" in out and "<name>a</name>" not in out


def test_content_match_plus_selection_and_wrong_namespace() -> None:
    out = run('<top xmlns="urn:x"><users><user><name>a</name><uid/></user></users></top>')
    assert "<uid>1</uid>" in out and "shell" not in out and "<name>b" not in out
    assert "top" not in run('<top xmlns="urn:z"/>')
