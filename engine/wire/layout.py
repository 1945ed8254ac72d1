"""XCAST6 / XOU wire layout: every offset, size and protocol constant, in one place.

The codec (:mod:`engine.wire.codec`, :mod:`engine.wire.xou`, :mod:`engine.wire.x2u`), the
brancher and the flow cache (:mod:`engine.forwarding`) and the AF_PACKET side
(:mod:`engine.dataplane`) read packets through these names instead of restating numbers.  The
in-kernel data path of a later issue shares this module (and may generate a C header from it),
so it holds **plain int (or 16-byte address) constants only**, no code: each group below says
what its offsets are relative to.  ``*_OFF`` is an offset, ``*_LEN`` a size in bytes,
``*_END`` the offset just past a field (so a slice reads ``data[X_OFF:X_END]``).

Module-level ints cost a ``LOAD_GLOBAL`` instead of a ``LOAD_CONST`` where they are used, a few
nanoseconds; the hottest loops bind them to locals or use the precomputed ``*_END``/sum
constants here so no arithmetic on constants is left for run time.

The XCAST6 v2.0 packet (offsets from the outer IPv6 header; see shared/docs/xcast6-wire-format.md)::

    0   outer IPv6  TC 010111xx, next header 41, src = sender/last branch, dst = lowest live dest
    40  inner IPv6  next header 43, src = original sender, dst = ff0e::114 (ALL_XCAST_NODES)
    80  routing hdr nh, hdr-ext-len = 2+2N, type 253, segleft 0, N, flags, icmpoff, reserved
    88  bitmap      16 bytes, destination i live when bitmap[i>>3] & (1 << (i&7))
    104 dests       N x 16 bytes
    104+16N         [destination options with the port list] transport (UDP) + payload
"""

from __future__ import annotations

# --- Ethernet II and VLAN tags: offsets from the start of the frame -------------------------
ETH_ALEN = 6                 # one MAC address
ETH_DST_OFF = 0
ETH_SRC_OFF = 6
ETH_TYPE_OFF = 12            # EtherType (or the TPID of the first VLAN tag)
ETH_HLEN = 14                # untagged header; the IPv6 packet starts here
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
# An 802.1Q/802.1ad tag sits where the EtherType was: TPID (2), TCI (2), then the next EtherType.
VLAN_TAG_LEN = 4
VLAN_TCI_OFF = 2             # from the tag's TPID
VLAN_VID_MASK = 0x0FFF

# --- One IPv6 header (RFC 8200): offsets from the start of that header ----------------------
IP6_HLEN = 40
IP6_VTF_OFF = 0              # version (4 bits) | traffic class (8) | flow label (20), big-endian
IP6_PLEN_OFF = 4             # payload length (16 bits)
IP6_NH_OFF = 6               # next header
IP6_HLIM_OFF = 7             # hop limit
IP6_SRC_OFF = 8
IP6_DST_OFF = 24
IP6_ADDR_LEN = 16

# --- Protocol numbers (IPv6 next header values) ---------------------------------------------
NH_UDP = 17
NH_IPV6 = 41
NH_ROUTING = 43
NH_ICMPV6 = 58
NH_DSTOPTS = 60

# --- XCAST6 marks: traffic class, flow labels, the routing type, flags, limits --------------
XCAST_TC = 0x5C              # 010111xx with ECN 00
XCAST_TC_MASK = 0xFC         # ECN bits are free
XCAST_FLOW = 0x58000         # flow label the WIDE implementations emit
XOU_FLOW = 0x78580           # XOU flow label: 0x, 'o', 'u', 0 (WIDE report §7)
RH_TYPE_XCAST = 253
MAX_DESTS = 126
FLAG_ANONYMOUS = 0x80
FLAG_DONT_X2U = 0x40
ALL_XCAST_NODES = bytes.fromhex("ff0e0000000000000000000000000114")   # ff0e::114
XOU_MARK_DST = bytes.fromhex("ff3500000000000000000000ffffffff")      # ALL_XCAST_SSM_ID ff35::ffff:ffff

# --- XCAST6 (RH253 encoding): offsets from the outer IPv6 header ----------------------------
OUTER_OFF = 0
OUTER_PLEN_OFF = OUTER_OFF + IP6_PLEN_OFF              # 4
OUTER_NH_OFF = OUTER_OFF + IP6_NH_OFF                  # 6
OUTER_HLIM_OFF = OUTER_OFF + IP6_HLIM_OFF              # 7
OUTER_SRC_OFF = OUTER_OFF + IP6_SRC_OFF                # 8
OUTER_SRC_END = OUTER_SRC_OFF + IP6_ADDR_LEN           # 24
OUTER_DST_OFF = OUTER_OFF + IP6_DST_OFF                # 24
OUTER_DST_END = OUTER_DST_OFF + IP6_ADDR_LEN           # 40
INNER_OFF = IP6_HLEN                                   # 40
INNER_FLOW_END = INNER_OFF + 4                         # 44: end of the inner version|TC|flow word
INNER_NH_OFF = INNER_OFF + IP6_NH_OFF                  # 46
INNER_SRC_OFF = INNER_OFF + IP6_SRC_OFF                # 48: the original sender
INNER_SRC_END = INNER_SRC_OFF + IP6_ADDR_LEN           # 64
INNER_DST_OFF = INNER_OFF + IP6_DST_OFF                # 64: ff0e::114 (XOU: the mark ff35::ffff:ffff)
INNER_DST_END = INNER_DST_OFF + IP6_ADDR_LEN           # 80
# The routing header type 253: eight fixed bytes, then the bitmap and the destination list.
RH_OFF = 2 * IP6_HLEN                                  # 80
RH_NH_OFF = RH_OFF + 0
RH_HDR_EXT_LEN_OFF = RH_OFF + 1                        # 2 + 2N (8-octet units, first 8 not counted)
RH_TYPE_OFF = RH_OFF + 2
RH_SEGLEFT_OFF = RH_OFF + 3
RH_N_OFF = RH_OFF + 4                                  # 84: N, the number of destinations
RH_FLAGS_OFF = RH_OFF + 5
RH_ICMPOFF_OFF = RH_OFF + 6
RH_FIXED_LEN = 8
BITMAP_OFF = RH_OFF + RH_FIXED_LEN                     # 88
BITMAP_LEN = 16                                        # LSB-first: bit i of byte i>>3 = destination i
DEST_OFF = BITMAP_OFF + BITMAP_LEN                     # 104: destination i at DEST_OFF + 16 i
DEST_LEN = IP6_ADDR_LEN
# The codec's fast-path length guard: the destination list's offset plus one UDP header.
FAST_MIN_LEN = DEST_OFF + 8                            # 112

# --- Destination-options header with the port list (our layout; RFC 5058 leaves Figure 7 out):
# offsets from the start of that header, which follows the destination list when the routing
# header's next header is 60.  Length in 8-octet units, the first 8 not counted.
DOPT_NH_OFF = 0
DOPT_HDR_EXT_LEN_OFF = 1
DOPT_OPTIONS_OFF = 2         # first option (type, data length, data)
DOPT_UNIT = 8
OPT_PAD1 = 0
OPT_PADN = 1
PORT_LIST_OPTION = 0x27      # option data: N x 16-bit ports, big-endian, in destination order

# --- UDP header (RFC 768): offsets from the start of the UDP header --------------------------
UDP_HLEN = 8
UDP_SPORT_OFF = 0
UDP_DPORT_OFF = 2
UDP_LEN_OFF = 4
UDP_CSUM_OFF = 6

# --- XOU (XCAST6 over UDP, our reading of WIDE report §7): offsets from the outer IPv6 header.
# Outer IPv6 (0), mark IPv6 (40, next header 17), UDP (80), XOU header (88), payload (124+16N).
XOU_UDP_OFF = 2 * IP6_HLEN                             # 80
XOU_HDR_OFF = XOU_UDP_OFF + UDP_HLEN                   # 88
XOU_ORIG_OFF = XOU_HDR_OFF + 0                         # the original source, 16 bytes
XOU_N_OFF = XOU_HDR_OFF + 16                           # 104
XOU_FLAGS_OFF = XOU_HDR_OFF + 17
XOU_ICMPOFF_OFF = XOU_HDR_OFF + 18
XOU_BITMAP_OFF = XOU_HDR_OFF + 20                      # 108
XOU_DEST_OFF = XOU_HDR_OFF + 36                        # 124: destination i at XOU_DEST_OFF + 16 i
XOU_FIXED_LEN = 36                                     # header = 36 + 16N bytes

# --- ICMPv6 (RFC 4443): offsets from the start of the ICMPv6 header -------------------------
ICMP6_HLEN = 8               # type, code, checksum, then 32 bits of parameter (MTU, pointer, unused)
ICMP6_TYPE_OFF = 0
ICMP6_CODE_OFF = 1
ICMP6_CSUM_OFF = 2
ICMP6_PARAM_OFF = 4          # Packet Too Big: the MTU; Parameter Problem: the pointer; echo: id, seq
ICMP6_DEST_UNREACH = 1       # code 0: no route to destination, code 4: port unreachable
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3      # code 0: hop limit exceeded in transit
ICMP6_PARAM_PROB = 4
ICMP6_INFO_MIN = 128         # types below are errors (RFC 4443 §2.1)
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP6_CODE_NO_ROUTE = 0
ICMP6_CODE_PORT_UNREACH = 4
ICMP6_CODE_HOP_LIMIT = 0
IPV6_MIN_MTU = 1280          # an ICMPv6 error never exceeds it (RFC 4443 §2.4(c))

# --- ICMP extensions (RFC 4884) carrying an Interface Information Object (RFC 5837) -------------
# Destination Unreachable and Time Exceeded only: the first byte of their 32-bit parameter is
# the length of the (zero-padded) original datagram in 64-bit words; the extension structure
# follows it.  Packet Too Big has no such byte (its parameter is the MTU).
ICMP6_EXT_LEN_OFF = ICMP6_PARAM_OFF   # "Length" (ICMPv4 has it one byte later, in 32-bit words)
ICMP6_EXT_UNIT = 8
ICMP_EXT_MIN_ORIG = 128      # the padded original datagram is at least this long
ICMP_EXT_VERSION = 2         # extension header: version (4 bits), reserved (12), checksum (16)
ICMP_EXT_HLEN = 4
ICMP_EXT_OBJ_HLEN = 4        # object header: length (16 bits, header included), class-num, c-type
ICMP_EXT_CLASS_IIO = 2       # Interface Information Object (RFC 5837 §4.1)
IIO_ROLE_SHIFT = 6           # c-type bits 0-1: interface role
IIO_ROLE_INCOMING = 0        # the interface the datagram arrived on
IIO_CTYPE_IFINDEX = 0x08     # c-type flags: which sub-objects follow, in this order
IIO_CTYPE_IPADDR = 0x04
IIO_CTYPE_NAME = 0x02
IIO_CTYPE_MTU = 0x01
IIO_AFI_IPV6 = 2             # IP Address Sub-Object: AFI (16 bits), reserved (16), address
