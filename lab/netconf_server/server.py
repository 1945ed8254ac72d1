"""A real NETCONF-over-SSH server (the ``netconf`` package) serving a namespace's routes.

Run: ``python -m lab.netconf_server --netns NS --host-key FILE --user U`` (password from
``$XNC_SERVER_PASSWORD``, optional ``--authorized-key FILE.pub``).  Prints ``READY port=N``.

* ``<get>`` answers ietf-routing ``/routing-state`` + ietf-interfaces ``/interfaces-state``
  (real YANG data, pruned by the package's subtree-filter implementation);
* ``<get-route-information>``, ``<get-interface-information>``,
  ``<get-route-summary-information>`` answer with reproduced Junos replies.

Both are built from the namespace's kernel state at the moment of each request.  ``--fault``
injects: ``rpc-error`` (an <rpc-error> on route RPCs), ``cut`` (reply cut short, connection
dropped), ``garbage-xml`` (framed but not XML), ``garbage-row`` (one bad destination),
``slow`` (reply after 30 s).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import sys
import threading
import time
from typing import Any

import netconf
import netconf.base
import netconf.error as ncerror
import netconf.util
import paramiko
from lxml import etree
from netconf import server as ncserver

from lab.netconf_server import ietf, junos, kernel, subtree

FAULTS = ("none", "rpc-error", "cut", "garbage-xml", "garbage-row", "slow")


class _Auth(paramiko.ServerInterface):
    """One user, by password and/or one authorized public key."""

    def __init__(self, user: str, password: str | None, pubkey: paramiko.PKey | None) -> None:
        self.user, self.password, self.pubkey = user, password, pubkey

    def get_allowed_auths(self, username: str) -> str:
        kinds = (["password"] if self.password else []) + (["publickey"] if self.pubkey else [])
        return ",".join(kinds)

    def check_auth_password(self, username: str, password: str) -> int:
        ok = self.password and username == self.user and password == self.password
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = self.pubkey is not None and username == self.user and key == self.pubkey
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: Any, name: str) -> bool:
        return name == "netconf"


class _Cut(Exception):
    """Raised after the connection was dropped on purpose."""


class RouteMethods:
    """rpc_* handlers (duck-typed ``netconf.server.NetconfMethods``)."""

    def __init__(self, netns: str, fault: str, nmda: bool = False) -> None:
        self.netns = netns
        self.fault = fault
        self.nmda = nmda

    def _state(self) -> tuple[list[kernel.KernelRoute], list[kernel.KernelLink]]:
        return kernel.routes(self.netns), kernel.links(self.netns)

    def _maybe_fault(self, session: Any, rpc: etree._Element, partial: str) -> None:
        if self.fault == "rpc-error":
            raise ncerror.OperationFailedAppError(rpc, None, message="routing table is being rebuilt")
        if self.fault == "slow":
            time.sleep(30)
        if self.fault == "cut":
            msg_id = rpc.get("message-id", "0")
            body = (f'<rpc-reply xmlns="{ietf.NC_NS}" message-id="{msg_id}">\n' + partial)[:4096]
            channel = session.pkt_stream.stream
            if session.new_framing:
                channel.sendall(f"\n#{len(body) * 4}\n".encode() + body.encode())
            else:
                channel.sendall(body.encode())
            time.sleep(0.2)
            channel.close()
            raise _Cut()
        if self.fault == "garbage-xml":
            channel = session.pkt_stream.stream
            msg_id = rpc.get("message-id", "0")
            body = (f'<rpc-reply xmlns="{ietf.NC_NS}" message-id="{msg_id}"><route-information><rt>'
                    "not xml &&& </route-information>")
            if session.new_framing:
                channel.sendall(f"\n#{len(body)}\n{body}\n##\n".encode())
            else:
                channel.sendall((body + "]]>]]>").encode())
            raise _Cut()

    def nc_append_capabilities(self, capabilities: etree._Element) -> None:
        for uri in (f"{ietf.RT_NS}?module=ietf-routing&revision=2016-11-04",
                    f"{ietf.V6UR_NS}?module=ietf-ipv6-unicast-routing&revision=2016-11-04",
                    f"{ietf.IF_NS}?module=ietf-interfaces&revision=2014-05-08",
                    "http://xml.juniper.net/netconf/junos/1.0"):
            netconf.util.subelm(capabilities, "capability").text = uri

    def rpc_get(self, session: Any, rpc: etree._Element, filter_or_none: etree._Element | None
                ) -> etree._Element:
        routes, links = self._state()
        data = ietf.data(routes, links, nmda=self.nmda)
        if filter_or_none is not None and filter_or_none.find(f".//{{{ietf.RT_NS}}}routes") is not None:
            self._maybe_fault(session, rpc, etree.tounicode(data)[:8192])
        if filter_or_none is None:
            return data
        if filter_or_none.get("type", "subtree") != "subtree":
            raise ncerror.OperationNotSupportedProtoError(rpc)
        return subtree.subtree_filter(data, filter_or_none)

    def _junos(self, text: str) -> etree._Element:
        return etree.fromstring(text, etree.XMLParser(huge_tree=True))

    def rpc_get_route_information(self, session: Any, rpc: etree._Element, *params: etree._Element
                                  ) -> etree._Element:
        routes, links = self._state()
        table = next((p.text or "" for p in params if etree.QName(p).localname == "table"), "inet6.0")
        text = junos.route_information(routes, links, table, garbage_row=self.fault == "garbage-row")
        self._maybe_fault(session, rpc, text[:8192])
        return self._junos(text)

    def rpc_get_interface_information(self, session: Any, rpc: etree._Element, *params: etree._Element
                                      ) -> etree._Element:
        _routes, links = self._state()
        return self._junos(junos.interface_information(links))

    def rpc_get_route_summary_information(self, session: Any, rpc: etree._Element,
                                          *params: etree._Element) -> etree._Element:
        routes, links = self._state()
        return self._junos(junos.route_summary(routes, links))


def _patch_framing(chunk: int) -> None:
    """Send 1.1-framed replies in ``chunk``-byte chunks like real boxes, not as one giant chunk."""
    def send_pdu(self: Any, msg: str, new_framing: bool) -> None:
        data = msg.encode("utf-8")
        if new_framing:
            pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
            parts = [b"\n#%d\n" % len(piece) + piece for piece in pieces]
            data = b"".join(parts) + b"\n##\n"
        else:
            data += b"]]>]]>"
        self.stream.sendall(data)

    netconf.base.NetconfFramingTransport.send_pdu = send_pdu


def _only_base10() -> None:
    """Advertise only urn:ietf:params:netconf:base:1.0, like older Junos: ]]>]]> framing."""
    original = netconf.base.NetconfSession.send_hello

    def send_hello(self: Any, caplist: Any, session_id: Any = None) -> Any:
        return original(self, [c for c in caplist if c.endswith("base:1.0")], session_id)

    netconf.base.NetconfSession.send_hello = send_hello
    # The package switches to 1.1 framing when the *client* offers 1.1, even if the server did
    # not (RFC 6242 requires both): make it never recognise 1.1.
    netconf.base.NC_BASE_11 = "urn:xnc:disabled:base:1.1"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.netconf_server")
    ap.add_argument("--netns", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host-key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--authorized-key", help="public key file (OpenSSH format) allowed for --user")
    ap.add_argument("--fault", choices=FAULTS, default="none")
    ap.add_argument("--chunk", type=int, default=0, help="1.1 framing chunk size (0: one chunk per reply)")
    ap.add_argument("--base10", action="store_true", help="advertise only base:1.0 (end-of-message framing)")
    ap.add_argument("--nmda", action="store_true", help="also serve /routing and /interfaces (RFC 8349 NMDA)")
    ap.add_argument("--xml-header", action="store_true", help="keep the package's <?xml?> declaration")
    args = ap.parse_args(argv)

    if not args.xml_header:
        netconf.base.XML_HEADER = ""
    if args.chunk:
        _patch_framing(args.chunk)
    if args.base10:
        _only_base10()
    netconf.nsmap_update({"rt": ietf.RT_NS, "v6ur": ietf.V6UR_NS, "if": ietf.IF_NS,
                          "ianaift": ietf.IANAIFT_NS, "junos": junos.JUNOS_NS})
    pubkey = None
    if args.authorized_key:
        with open(args.authorized_key) as fh:
            kind, b64 = fh.read().split()[:2]
        pubkey = paramiko.PKey.from_type_string(kind, base64.b64decode(b64))
    auth = _Auth(args.user, os.environ.get("XNC_SERVER_PASSWORD"), pubkey)
    methods = RouteMethods(args.netns, args.fault, args.nmda)
    srv = ncserver.NetconfSSHServer(server_ctl=auth, server_methods=methods, port=args.port,
                                    host_key=args.host_key, debug=False)
    print(f"READY port={srv.port}", flush=True)
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
