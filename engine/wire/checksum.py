"""Internet checksum (RFC 1071) and its incremental update (RFC 1624), for IPv6 UDP."""

from __future__ import annotations

IPPROTO_UDP = 17


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's-complement sum of the 16-bit big-endian words of ``data`` (odd length zero-padded).

    Computed as ``int.from_bytes(data) % 0xFFFF``: 2**16 == 1 (mod 0xFFFF), so the big number
    is congruent to the sum of its 16-bit words, and one's-complement addition *is* addition
    mod 0xFFFF (0 and 0xFFFF both being zero).  One C-level pass instead of a Python loop.
    The result is < 0xFFFF, so it can be added to other sums and folded as usual.
    """
    if len(data) & 1:
        return (int.from_bytes(data, "big") << 8) % 0xFFFF
    return int.from_bytes(data, "big") % 0xFFFF


def fold(total: int) -> int:
    """Fold carries into 16 bits."""
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header_sum(src: bytes, dst: bytes, length: int, proto: int = IPPROTO_UDP) -> int:
    """Unfolded sum of the IPv6 pseudo-header (RFC 8200 §8.1)."""
    return ones_sum(src) + ones_sum(dst) + (length >> 16) + (length & 0xFFFF) + proto


def udp6_checksum(src: bytes, dst: bytes, udp: bytes | bytearray | memoryview) -> int:
    """UDP-over-IPv6 checksum of ``udp`` (header with checksum field as given, normally 0).

    Returns 0xFFFF instead of 0: a zero UDP checksum is not allowed over IPv6.
    """
    c = (~fold(pseudo_header_sum(src, dst, len(udp)) + ones_sum(udp))) & 0xFFFF
    return c or 0xFFFF


def incremental(old_checksum: int, old_words_sum: int, new_words_sum: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with m/m' given as unfolded word sums.

    ``old_words_sum`` is the sum of the 16-bit words that were replaced, ``new_words_sum`` the
    sum of their replacements.  ~m is computed as 0xFFFF - fold(m) per word group, which is
    exact in one's-complement arithmetic.
    """
    total = ((~old_checksum) & 0xFFFF) + (0xFFFF - fold(old_words_sum)) + fold(new_words_sum)
    c = (~fold(total)) & 0xFFFF
    return c or 0xFFFF


IPPROTO_ICMPV6 = 58


def icmp6_checksum(src: bytes, dst: bytes, msg: bytes | bytearray | memoryview) -> int:
    """ICMPv6 checksum (RFC 4443 §2.3) of ``msg`` (its checksum field as given, normally 0)."""
    return (~fold(pseudo_header_sum(src, dst, len(msg), IPPROTO_ICMPV6) + ones_sum(msg))) & 0xFFFF
