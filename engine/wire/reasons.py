"""Why a frame or destination was rejected or dropped.

Every rejection by the codec and every drop by branching carries one of these.  The values
are stable snake_case strings: they are used verbatim as Prometheus label values
(``xcast6_drops_total{reason="no_route"}``), JSON keys and CLI output, so never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class DropReason(StrEnum):
    """Every rejection (codec) and drop (branching) reason."""

    # --- framing (only with l2=True) -------------------------------------------------------
    L2_TRUNCATED = "l2_truncated"                    # shorter than an Ethernet / 802.1Q header
    NOT_IPV6_ETHERTYPE = "not_ipv6_ethertype"        # ethertype (after any VLAN tags) is not 0x86DD

    # --- classification: "not XCAST6 at all" ----------------------------------------------
    TRUNCATED = "truncated"                          # buffer ends before a header it must hold
    NOT_IPV6 = "not_ipv6"                            # outer version nibble is not 6
    NOT_XCAST_TRAFFIC_CLASS = "not_xcast_traffic_class"  # outer TC is not 010111xx (and no XOU label)
    OUTER_NEXT_HEADER = "outer_next_header_not_ipv6"  # outer next header is not 41
    INNER_NOT_IPV6 = "inner_not_ipv6"                # inner version nibble is not 6
    WRONG_INNER_DESTINATION = "wrong_inner_destination"  # neither ff0e::114 nor the XOU mark
    INNER_NEXT_HEADER = "inner_next_header_not_routing"  # inner next header is not 43 (RH)
    WRONG_ROUTING_TYPE = "wrong_routing_type"        # routing header type is not 253

    # --- malformed XCAST6 -----------------------------------------------------------------
    BAD_PAYLOAD_LENGTH = "bad_payload_length"        # outer payload length disagrees with the frame
    BAD_INNER_PAYLOAD_LENGTH = "bad_inner_payload_length"  # inner length != outer length - 40
    N_OUT_OF_RANGE = "n_out_of_range"                # N not in 1..126
    BAD_HDR_EXT_LEN = "bad_hdr_ext_len"              # RH Hdr Ext Len != 2 + 2N
    BITMAP_BEYOND_N = "bitmap_bits_beyond_n"         # a bitmap bit at index >= N is set
    BAD_PORT_LIST = "bad_port_list"                  # destination-options header / port list malformed
    BAD_TRANSPORT_LENGTH = "bad_transport_length"    # UDP header truncated or its length field wrong
    XOU_NOT_UDP = "xou_not_udp"                      # XOU mark header not followed by UDP
    XOU_BAD_HEADER = "xou_bad_header"                # XOU header truncated / inconsistent

    # --- branching decisions --------------------------------------------------------------
    NO_LIVE_DESTINATION = "no_live_destination"      # packet arrived with an all-zero bitmap
    INVALID_DESTINATION = "invalid_destination"      # a live dest is not global unicast: whole packet
    HOP_LIMIT_EXCEEDED = "hop_limit_exceeded"        # outer hop limit <= 1
    NO_ROUTE = "no_route"                            # counted per destination; its bit is cleared
    NO_SOURCE_ADDRESS = "no_source_address"          # no engine address for the egress link (per copy)
    ICMP_ECHO_BLOCKED = "icmp_echo_blocked"          # RFC 5058 §14 smurf protection (policy)


#: Reasons that mean "this frame is not an XCAST6 packet" (not malformed XCAST6).
NOT_XCAST: frozenset[DropReason] = frozenset(
    {
        DropReason.NOT_IPV6_ETHERTYPE,
        DropReason.NOT_IPV6,
        DropReason.NOT_XCAST_TRAFFIC_CLASS,
        DropReason.OUTER_NEXT_HEADER,
        DropReason.INNER_NOT_IPV6,
        DropReason.WRONG_INNER_DESTINATION,
        DropReason.INNER_NEXT_HEADER,
        DropReason.WRONG_ROUTING_TYPE,
    }
)
