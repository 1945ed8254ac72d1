// SPDX-License-Identifier: GPL-2.0
/* XCAST6 fast path: a TC (clsact ingress) program on the engine's ingress links.
 *
 * It does the common case of engine/forwarding/branch.py in the kernel and punts (TC_ACT_OK,
 * the frame unchanged) everything else to the Python worker, the reference and slow path,
 * whose AF_PACKET sockets are bound to ETH_P_IPV6 and so see a frame only after this program
 * let it pass (ETH_P_ALL taps would see it before TC ingress).
 *
 * Handled here (the worker's fast parse in engine/wire/codec.py, byte for byte):
 *   outer TC 010111xx, outer next header 41, payload length = frame, inner version 6 with
 *   payload length plen - 40, inner next header 43, routing type 253, routing next header 17
 *   (UDP), 1 <= N <= 126, hdr ext len 2 + 2N, inner destination ff0e::114, no bitmap bit at or
 *   beyond N, UDP length = what follows the destination list; a live bitmap; hop limit > 1.
 *   Per live destination: not global unicast -> the whole packet is dropped
 *   (invalid_destination); LPM miss, or a route whose router interface has no engine link ->
 *   bit cleared, counted no_route.  Groups by next hop (router gateway + interface; a connected
 *   route makes the destination its own next hop); per group one copy: bitmap, outer source =
 *   the engine's address on the egress link (none -> no_source_address), outer destination =
 *   the group's lowest live destination, hop limit - 1, ANONYMOUS zeroing, Ethernet header
 *   router MAC <- link MAC; a one-destination group without DONT_X2U leaves as X2U (plain
 *   IPv6/UDP, checksum updated incrementally as RFC 1624, like the brancher).
 *
 * Punted (the Python worker decides and counts): anything the parse above rejects (XOU, port
 * lists, non-UDP transports, malformed packets: their drop reasons are Python's), an empty
 * bitmap, hop limit <= 1 (ICMP errors are Python's), ECMP routes of more than XC_ECMP_MAX
 * next hops (fewer: the member is Fib.lookup's, CRC-32 of the destination), a link that is down or whose router MAC is not learned, a copy larger than
 * the link MTU, more than XC_MAX_GROUPS copies, UDP checksum 0 with an X2U copy, an in-band
 * VLAN tag, a destination that is one of the engine's own addresses (local delivery).
 *
 * The offsets come from engine/wire/layout.py through the generated xcast6_layout.h.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xcast6_layout.h"

#define XC_MAX_GROUPS 32      /* copies per packet handled here; more -> punt (a power of 2) */
#define XC_ECMP_PUNT 1        /* route_val.flags: more next hops than XC_ECMP_MAX */
#define XC_CONNECTED 2
#define XC_LOCAL 4
#define XC_ECMP 8             /* route_val.hop_id is the key of the route's entry in `ecmp` */
#define XC_ECMP_MAX 16        /* members per ECMP route handled here (a power of 2) */
#define XC_LINK_OK 1          /* link_val.state: up with a router MAC */
#define XC_LINK_DOWN 2
#define XC_LINK_NO_MAC 3
#define XC_LINK_NONE 4        /* no engine link stands for that router interface: no_route */

/* counters: the index order is kernel_path.COUNTERS (a test checks they agree) */
enum {
	C_RECEIVED, C_RECEIVED_BYTES, C_BRANCHED, C_COPIES_OUT, C_X2U_OUT, C_BYTES_OUT,
	C_EGRESS_ERRORS, C_DROP_NO_ROUTE, C_DROP_INVALID, C_DROP_NO_SOURCE,
	C_PUNT_PARSE, C_PUNT_NO_LIVE, C_PUNT_HOP_LIMIT, C_PUNT_ECMP, C_PUNT_LOCAL, C_PUNT_EGRESS,
	C_PUNT_MTU, C_PUNT_GROUPS, C_PUNT_CSUM0, C_PUNT_VLAN, C_PUNT_NO_ROUTE,
	C_LAT_COUNT, C_LAT_SUM, C_LAT_MAX,
	C_NCOUNTERS
};

/* after a bounds check: keeps clang from indexing with a copy of the value the verifier did
 * not see checked ("unbounded memory access") */
#define BOUNDED(v, max) ({ asm volatile("" : "+r"(v)); (v) < (max); })
#define XC_GIDX(k) ({ __u64 __v = (k); asm volatile("" : "+r"(__v)); __v & (XC_MAX_GROUPS - 1); })
/* 16 N bytes for 1 <= N <= 126 (checked before), written so that even an older verifier that
 * lost N's range sees a length in [16, 2048]: the 128-row arrays below (6.1 rejected n * 16) */
#define XC_DLEN(n) ({ __u64 __v = (n); asm volatile("" : "+r"(__v)); (((__v - 1) & 127) << 4) + 16; })
#define XC_MIDX(k) ({ __u64 __v = (k); asm volatile("" : "+r"(__v)); __v & (XC_ECMP_MAX - 1); })
#define XC_IDX(i) ({ __u64 __v = (i); asm volatile("" : "+r"(__v)); __v & 127; })

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct route_val {
	__u32 hop_id;        /* next-hop identity (router gateway + interface) for grouping */
	__u32 link_id;       /* key of the router interface's entry in `links` */
	__u32 flags;         /* XC_ECMP_PUNT | XC_CONNECTED | XC_LOCAL */
};

/* an ECMP route's next hops, in the Route's order (the member index is CRC-32 % n) */
struct ecmp_member {
	__u32 hop_id;
	__u32 link_id;
	__u32 flags;         /* XC_CONNECTED */
};

struct ecmp_val {
	__u32 n;
	__u32 usable;                 /* bit j: an engine link stands for member j's interface */
	__u32 nusable;
	__u8 usable_idx[XC_ECMP_MAX]; /* the usable members' indexes, in order */
	__u32 pad;
	struct ecmp_member m[XC_ECMP_MAX];
};

struct link_val {
	__u32 state;
	__u32 ifindex;       /* the engine link copies leave on */
	__u32 mtu;
	__u32 has_src;
	__u8 eth[XC_ETH_HLEN];   /* router MAC, link MAC, 0x86dd */
	__u8 pad[2];
	__u8 src[16];        /* the engine's address on the link (outer source of XCAST copies) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__type(key, struct lpm_key);
	__type(value, struct route_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} routes_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1048576);
	__type(key, struct lpm_key);
	__type(value, struct route_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} routes_b SEC(".maps");

/* ctl[0]: which route map serves (0 = routes_a, 1 = routes_b): the control plane fills the
 * other one, flips this, then brings the old one up to date, so a packet (which reads it once)
 * never sees half of a sync diff. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ctl SEC(".maps");

/* ECMP next-hop sets by id.  An id names one member list while routes use it (the control plane
 * allocates it per distinct list, writes it before any route names it, deletes it after the last
 * route that named it left both tries, and hands the id out again only in a later diff: a packet
 * still on the old trie misses and punts); which members are usable (have an
 * engine link) is rewritten with the link map, as a whole element, so one lookup gives a packet
 * a consistent member list and usable set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ecmp_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);    /* memory for the sets in use only */
} ecmp SEC(".maps");

/* a hash map: an update swaps in a whole new element (RCU), so a reader never sees a torn one */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct link_val);
} links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* latency of branched packets, program entry -> last copy handed to its link, in the buckets
 * of engine/dataplane/histogram.py (XC_LAT_BOUNDS, generated) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XC_LAT_NBUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} latency SEC(".maps");

static const __u64 lat_bounds[XC_LAT_NBUCKETS - 1] = XC_LAT_BOUNDS;
static const __u32 crc32_table[256] = XC_CRC32_TABLE;

/* zlib.crc32 of a destination: Fib.lookup's ECMP member choice (engine/forwarding/fib.py) */
static __always_inline __u32 crc32_16(const __u8 *d)
{
	__u32 c = 0xffffffff;
	int j;

#pragma unroll
	for (j = 0; j < 16; j++) {
		/* the mask after the xor, as written: clang would move it before, and 6.1's verifier
		 * then loses the index's bound (xor of two bounded values) */
		__u64 x = c ^ d[j];

		asm volatile("" : "+r"(x));
		c = crc32_table[x & 0xff] ^ (c >> 8);
	}
	return ~c;
}


static long bucket_step(__u32 i, void *ctx)
{
	__u64 *c = ctx;    /* c[0] = sample, c[1] = bucket */

	if (i >= XC_LAT_NBUCKETS - 1 || c[0] < lat_bounds[i])
		return 1;
	c[1] = i + 1;
	return 0;
}

static __always_inline void count(__u32 idx, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);
	if (c)
		*c += v;
}

static __always_inline void record_latency(__u64 ns)
{
	__u64 c[2] = {ns, 0};
	__u32 b, idx = C_LAT_MAX;
	__u64 *v;

	bpf_loop(XC_LAT_NBUCKETS - 1, bucket_step, c, 0);
	b = c[1];
	v = bpf_map_lookup_elem(&latency, &b);
	if (v)
		*v += 1;
	count(C_LAT_COUNT, 1);
	count(C_LAT_SUM, ns);
	v = bpf_map_lookup_elem(&counters, &idx);
	if (v && *v < ns)
		*v = ns;
}

/* The packet's last copy leaves by bpf_redirect, which the kernel carries out after the program
 * returned (skb_do_redirect): whether that copy really left is known only there.  The program
 * notes the skb and what it counted for the copy (this CPU's entry: the redirect follows on
 * the same CPU before anything else runs there), and xcast6_redirect_done (fexit on
 * skb_do_redirect) takes the copy back out of copies_out/x2u_out/bytes_out into egress_errors
 * when the redirect failed -- as a failed bpf_clone_redirect is counted.  Without that program
 * (no kernel BTF) the failure is only in the link's own drop counters. */
struct redirect_note {
	__u64 skb;
	__u32 x2u, bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_note);
} redirect_notes SEC(".maps");

struct group {
	__u64 bits_lo, bits_hi;   /* the copy's bitmap, LSB first like the wire */
	__u32 hop_id;
	__u32 link_id;
	__u32 first;              /* lowest live destination index */
	__u32 count;
	__u32 connected;
	__u32 x2u;
	__u32 drop;               /* no source address on the link */
	__u32 pad;
	struct link_val link;
};

struct scratch {
	/* 128 rows (N <= 126): an index masked with XC_IDX is always in bounds */
	__u8 dests[128][16];
	__u8 image[128][16];              /* ANONYMOUS destination list of one copy */
	struct group g[XC_MAX_GROUPS];
	__u32 ngroups;
	__u32 n;
	__u32 no_route;
	__u32 invalid;
	__u32 punt;                       /* a C_PUNT_* index, 0 = none */
	__u32 active;
	__u32 pad;
	__u64 live_lo, live_hi;
	struct __sk_buff *skb;
	__u32 sent_copies, sent_x2u, errors, out_bytes;
	/* the last copy leaves on the original skb (bpf_redirect after the program returns):
	 * one skb_clone and the original's free fewer per packet.  last_x2u says which loop
	 * emits it, last_group which group; redirect_ifindex is set once its bytes are written. */
	__u32 last_x2u, last_group, redirect_ifindex, redirect_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline int is_live(struct scratch *s, __u32 i)
{
	if (i < 64)
		return (s->live_lo >> i) & 1;
	return (s->live_hi >> (i - 64)) & 1;
}

/* rule 3 and 4 for destination i (bpf_loop callback) */
struct classify_ctx {
	struct scratch *s;
};

static long classify_dest(__u32 i, void *ctx)
{
	struct scratch *s = ((struct classify_ctx *)ctx)->s;
	struct lpm_key key = {.prefixlen = 128};
	struct route_val *r;
	struct link_val *l;
	__u8 *d;
	__u32 k, gi, hop_id, link_id, rflags;

	if (i >= s->n || !BOUNDED(i, XC_MAX_DESTS))
		return 1;
	if (!is_live(s, i))
		return 0;
	d = s->dests[XC_IDX(i)];
	/* engine/forwarding/branch.py is_valid_unicast: not ::/8, ff00::/8, fe80::/10, fec0::/10 */
	if (d[0] == 0 || d[0] == 0xff || (d[0] == 0xfe && (d[1] & 0xc0) >= 0x80)) {
		s->invalid = 1;
		return 1;
	}
	__builtin_memcpy(key.addr, d, 16);
	r = bpf_map_lookup_elem(s->active ? (void *)&routes_b : (void *)&routes_a, &key);
	if (!r) {
		s->no_route++;
		return 0;
	}
	if (r->flags & XC_LOCAL) {
		s->punt = C_PUNT_LOCAL;
		return 1;
	}
	if (r->flags & XC_ECMP_PUNT) {
		s->punt = C_PUNT_ECMP;
		return 1;
	}
	hop_id = r->hop_id;
	link_id = r->link_id;
	rflags = r->flags;
	if (rflags & XC_ECMP) {
		/* as the brancher: Fib.lookup's member (CRC-32 of the destination % n); if no engine
		 * link stands for its interface, Brancher._usable_member: among the members that have
		 * one, the destination's low 32 bits % their count; none -> no_route */
		struct ecmp_val *e = bpf_map_lookup_elem(&ecmp, &hop_id);
		struct ecmp_member *m;
		__u32 n, j, nu, low;

		if (!e || e->n < 2 || e->n > XC_ECMP_MAX) {
			s->punt = C_PUNT_ECMP;
			return 1;
		}
		n = e->n;
		j = XC_MIDX(crc32_16(d) % n);
		if (!((e->usable >> j) & 1)) {
			nu = e->nusable;
			if (!nu || nu > XC_ECMP_MAX) {
				s->no_route++;
				return 0;
			}
			low = (__u32)d[12] << 24 | (__u32)d[13] << 16 | (__u32)d[14] << 8 | d[15];
			j = e->usable_idx[XC_MIDX(low % nu)];
		}
		m = &e->m[XC_MIDX(j)];
		hop_id = m->hop_id;
		link_id = m->link_id;
		rflags = m->flags;
	}
	l = bpf_map_lookup_elem(&links, &link_id);
	if (!l || l->state == XC_LINK_NONE) {
		s->no_route++;
		return 0;
	}
	if (l->state != XC_LINK_OK) {
		s->punt = C_PUNT_EGRESS;
		return 1;
	}
	gi = s->ngroups;
	for (k = 0; k < XC_MAX_GROUPS; k++) {
		struct group *g;
		__u32 f;

		if (k >= s->ngroups || !BOUNDED(k, XC_MAX_GROUPS))
			break;
		g = &s->g[XC_GIDX(k)];
		if (g->hop_id != hop_id)
			continue;
		if (rflags & XC_CONNECTED) {
			/* connected: the destination is the next hop; equal addresses share it */
			f = XC_IDX(g->first);
			if (*(__u64 *)s->dests[f] != *(__u64 *)d ||
			    *(__u64 *)(s->dests[f] + 8) != *(__u64 *)(d + 8))
				continue;
		}
		gi = k;
		break;
	}
	if (!BOUNDED(gi, XC_MAX_GROUPS)) {
		s->punt = C_PUNT_GROUPS;
		return 1;
	}
	if (gi == s->ngroups) {
		struct group *g = &s->g[XC_GIDX(gi)];

		g->bits_lo = 0;
		g->bits_hi = 0;
		g->hop_id = hop_id;
		g->link_id = link_id;
		g->first = i;
		g->count = 0;
		g->connected = rflags & XC_CONNECTED;
		g->x2u = 0;
		g->drop = 0;
		__builtin_memcpy(&g->link, l, sizeof(*l));
		s->ngroups = gi + 1;
	}
	if (i < 64)
		s->g[XC_GIDX(gi)].bits_lo |= 1ULL << i;
	else
		s->g[XC_GIDX(gi)].bits_hi |= 1ULL << (i - 64);
	s->g[XC_GIDX(gi)].count++;
	return 0;
}

/* ANONYMOUS: the destination list of copy g, with addresses not live in it zeroed */
struct image_ctx {
	struct scratch *s;
	struct group *g;
};

static long image_dest(__u32 i, void *ctx)
{
	struct image_ctx *c = ctx;
	struct scratch *s = c->s;
	struct group *g = c->g;
	int live;

	if (i >= s->n || !BOUNDED(i, XC_MAX_DESTS))
		return 1;
	live = i < 64 ? (g->bits_lo >> i) & 1 : (g->bits_hi >> (i - 64)) & 1;
	i = XC_IDX(i);
	if (live) {
		__builtin_memcpy(s->image[i], s->dests[i], 16);
	} else {
		*(__u64 *)s->image[i] = 0;
		*(__u64 *)(s->image[i] + 8) = 0;
	}
	return 0;
}

static __always_inline void bitmap_bytes(struct group *g, __u8 *out)
{
	/* little-endian host (x86-64, arm64): the wire's LSB-first bitmap is the u64s' memory order */
	__builtin_memcpy(out, &g->bits_lo, 8);
	__builtin_memcpy(out + 8, &g->bits_hi, 8);
}

/* the tail every copy shares: its Ethernet header, then out on its link -- a clone, or for the
 * packet's last copy the original skb itself (bpf_redirect once the program returns) */
static __always_inline void send_copy(struct scratch *s, struct __sk_buff *skb, struct group *g,
				      __u32 k, __u32 x2u, __u32 len)
{
	if (bpf_skb_store_bytes(skb, 0, g->link.eth, XC_ETH_HLEN, 0)) {
		s->errors++;
		return;
	}
	if (s->last_x2u == x2u && k == s->last_group) {
		s->redirect_ifindex = g->link.ifindex;
		s->redirect_bytes = len;
	} else if (bpf_clone_redirect(skb, g->link.ifindex, 0)) {
		s->errors++;
		return;
	}
	if (x2u)
		s->sent_x2u++;
	else
		s->sent_copies++;
	s->out_bytes += len;
}

/* one XCAST copy per non-X2U group (bpf_loop callback over the groups) */
struct emit_ctx {
	struct scratch *s;
	struct __sk_buff *skb;
	__u32 anonymous;
	__u32 len;
};

static long emit_xcast(__u32 k, void *ctx)
{
	struct emit_ctx *e = ctx;
	struct scratch *s = e->s;
	struct __sk_buff *skb = e->skb;
	struct group *g;
	__u8 bm[16], *dst;
	__u32 f;

	if (k >= s->ngroups || !BOUNDED(k, XC_MAX_GROUPS))
		return 1;
	g = &s->g[XC_GIDX(k)];
	if (g->x2u || g->drop)
		return 0;
	f = g->first;
	dst = s->dests[XC_IDX(f)];
	bitmap_bytes(g, bm);
	if (bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_OUTER_SRC_OFF, g->link.src, 16, 0) ||
	    bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_OUTER_DST_OFF, dst, 16, 0) ||
	    bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_BITMAP_OFF, bm, 16, 0)) {
		s->errors++;
		return 0;
	}
	if (e->anonymous) {
		struct image_ctx ic = {.s = s, .g = g};
		__u64 len = XC_DLEN(s->n);

		bpf_loop(XC_MAX_DESTS, image_dest, &ic, 0);
		if (bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_DEST_OFF, s->image, len, 0)) {
			s->errors++;
			return 0;
		}
	}
	send_copy(s, skb, g, k, 0, e->len);
	return 0;
}

struct x2u_ctx {
	struct scratch *s;
	struct __sk_buff *skb;
	__u32 base;      /* ~ck0 + ~sum(ff0e::114), unfolded */
	__u32 len;
};

static __always_inline __u32 addr_sum(const __u8 *d)
{
	__u32 sum = 0;
	int j;

#pragma unroll
	for (j = 0; j < 16; j += 2)
		sum += ((__u32)d[j] << 8) | d[j + 1];
	return sum % 0xffff;     /* engine/wire/x2u.py addr_sum: the word sum mod 0xffff */
}

static long emit_x2u(__u32 k, void *ctx)
{
	struct x2u_ctx *e = ctx;
	struct scratch *s = e->s;
	struct __sk_buff *skb = e->skb;
	struct group *g;
	__u8 *dst;
	__u32 f, x;
	__u16 ck;

	if (k >= s->ngroups || !BOUNDED(k, XC_MAX_GROUPS))
		return 1;
	g = &s->g[XC_GIDX(k)];
	if (!g->x2u)
		return 0;
	f = g->first;
	dst = s->dests[XC_IDX(f)];
	/* RFC 1624, as engine/forwarding/branch.py: HC' = ~(~HC + ~m + m'), 0 -> 0xffff */
	x = e->base + addr_sum(dst);
	x = (x & 0xffff) + (x >> 16);
	x = (x & 0xffff) + (x >> 16);
	x = (~x) & 0xffff;
	if (!x)
		x = 0xffff;
	ck = bpf_htons((__u16)x);
	if (bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_IP6_DST_OFF, dst, 16, 0) ||
	    bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_IP6_HLEN + XC_UDP_CSUM_OFF, &ck, 2, 0)) {
		s->errors++;
		return 0;
	}
	send_copy(s, skb, g, k, 1, e->len);
	return 0;
}

static __always_inline int punt(__u32 reason)
{
	count(reason, 1);
	return TC_ACT_OK;
}

/* headers up to the bitmap, as the brancher's fast parse reads them */
struct hdrs {
	__u8 pad[2];                  /* puts the IPv6 header on an 8-byte boundary */
	__u8 eth[XC_ETH_HLEN];
	__u8 ip[XC_DEST_OFF];
} __attribute__((aligned(8)));

SEC("tc")
int xcast6_ingress(struct __sk_buff *skb)
{
	struct hdrs h;
	struct scratch *s;
	__u32 zero = 0, *active;
	__u32 plen, blen, n, toff, ulen, hl, flags, k, need_x2u = 0, has_copy = 0;
	__u8 ck0[2];
	__u64 t0 = bpf_ktime_get_ns();

	if (skb->protocol != bpf_htons(XC_ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, 0, h.eth, XC_ETH_HLEN + XC_IP6_HLEN))
		return TC_ACT_OK;
	/* the worker's classic BPF: IPv6 with traffic class 010111xx; the rest is not ours at all */
	if (((h.ip[0] & 0x0f) << 4 | h.ip[1] >> 4) >> 2 != XC_XCAST_TC >> 2 || h.ip[0] >> 4 != 6)
		return TC_ACT_OK;
	if (h.eth[XC_ETH_TYPE_OFF] != XC_ETH_P_IPV6 >> 8 || h.eth[XC_ETH_TYPE_OFF + 1] != (XC_ETH_P_IPV6 & 0xff))
		return punt(C_PUNT_VLAN);
	if (bpf_skb_load_bytes(skb, 0, h.eth, XC_ETH_HLEN + XC_DEST_OFF))
		return punt(C_PUNT_PARSE);
	plen = (__u32)h.ip[XC_OUTER_PLEN_OFF] << 8 | h.ip[XC_OUTER_PLEN_OFF + 1];
	blen = skb->len - XC_ETH_HLEN;
	n = h.ip[XC_RH_N_OFF];
	hl = h.ip[XC_OUTER_HLIM_OFF];
	flags = h.ip[XC_RH_FLAGS_OFF];
	if (h.ip[XC_OUTER_NH_OFF] != XC_NH_IPV6 || plen + XC_IP6_HLEN != blen ||
	    h.ip[XC_INNER_OFF] >> 4 != 6 ||
	    ((__u32)h.ip[XC_INNER_OFF + XC_IP6_PLEN_OFF] << 8 | h.ip[XC_INNER_OFF + XC_IP6_PLEN_OFF + 1]) != plen - XC_IP6_HLEN ||
	    h.ip[XC_INNER_NH_OFF] != XC_NH_ROUTING || h.ip[XC_RH_TYPE_OFF] != XC_RH_TYPE_XCAST ||
	    h.ip[XC_RH_NH_OFF] != XC_NH_UDP || n < 1 || n > XC_MAX_DESTS ||
	    h.ip[XC_RH_HDR_EXT_LEN_OFF] != 2 + 2 * n ||
	    *(__u64 *)(h.ip + XC_INNER_DST_OFF) != XC_ALL_XCAST_NODES_LE0 ||
	    *(__u64 *)(h.ip + XC_INNER_DST_OFF + 8) != XC_ALL_XCAST_NODES_LE1)
		return punt(C_PUNT_PARSE);
	toff = XC_DEST_OFF + XC_DEST_LEN * n;
	if (blen < toff + XC_UDP_HLEN)
		return punt(C_PUNT_PARSE);
	{
		__u8 udp[XC_UDP_HLEN];

		if (bpf_skb_load_bytes(skb, XC_ETH_HLEN + toff, udp, sizeof(udp)))
			return punt(C_PUNT_PARSE);
		ulen = (__u32)udp[XC_UDP_LEN_OFF] << 8 | udp[XC_UDP_LEN_OFF + 1];
		ck0[0] = udp[XC_UDP_CSUM_OFF];
		ck0[1] = udp[XC_UDP_CSUM_OFF + 1];
	}
	if (ulen != blen - toff)
		return punt(C_PUNT_PARSE);

	s = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!s)
		return punt(C_PUNT_PARSE);
	__builtin_memcpy(&s->live_lo, h.ip + XC_BITMAP_OFF, 8);
	__builtin_memcpy(&s->live_hi, h.ip + XC_BITMAP_OFF + 8, 8);
	/* no bitmap bit at or beyond N */
	if (n < 64 ? (s->live_lo >> n) || s->live_hi : n < 128 && (s->live_hi >> (n - 64)))
		return punt(C_PUNT_PARSE);
	if (!s->live_lo && !s->live_hi)
		return punt(C_PUNT_NO_LIVE);
	if (hl <= 1)
		return punt(C_PUNT_HOP_LIMIT);
	{
		__u64 len = XC_DLEN(n);

		if (bpf_skb_load_bytes(skb, XC_ETH_HLEN + XC_DEST_OFF, s->dests, len))
			return punt(C_PUNT_PARSE);
	}
	active = bpf_map_lookup_elem(&ctl, &zero);
	s->active = active ? *active : 0;
	s->n = n;
	s->ngroups = 0;
	s->no_route = 0;
	s->invalid = 0;
	s->punt = 0;
	s->sent_copies = s->sent_x2u = s->errors = s->out_bytes = 0;
	s->redirect_ifindex = 0;
	{
		struct classify_ctx cc = {.s = s};

		bpf_loop(XC_MAX_DESTS, classify_dest, &cc, 0);
	}
	if (s->invalid) {
		count(C_RECEIVED, 1);
		count(C_RECEIVED_BYTES, skb->len);
		count(C_DROP_INVALID, 1);
		return TC_ACT_SHOT;
	}
	if (s->punt)
		return punt(s->punt);
	/* per copy: X2U or not, source address, MTU -- every punt decided before anything is sent;
	 * and which copy is the last (the X2U copies leave after the XCAST ones) */
	s->last_x2u = 0;
	s->last_group = XC_MAX_GROUPS;
	for (k = 0; k < XC_MAX_GROUPS; k++) {
		struct group *g;

		if (k >= s->ngroups || !BOUNDED(k, XC_MAX_GROUPS))
			break;
		g = &s->g[XC_GIDX(k)];
		if (g->count == 1 && !(flags & XC_FLAG_DONT_X2U)) {
			g->x2u = 1;
			need_x2u = 1;
			s->last_x2u = 1;
			s->last_group = k;
			if (blen - toff + XC_IP6_HLEN > g->link.mtu)
				return punt(C_PUNT_MTU);
		} else if (!g->link.has_src) {
			g->drop = 1;
		} else {
			has_copy = 1;
			if (!need_x2u)
				s->last_group = k;
			if (blen > g->link.mtu)
				return punt(C_PUNT_MTU);
		}
	}
	if (need_x2u && !ck0[0] && !ck0[1])
		return punt(C_PUNT_CSUM0);
	/* no destination routable: Destination Unreachable (rate-limited) is the slow path's */
	if (!s->ngroups)
		return punt(C_PUNT_NO_ROUTE);

	count(C_RECEIVED, 1);
	count(C_RECEIVED_BYTES, skb->len);
	if (s->no_route)
		count(C_DROP_NO_ROUTE, s->no_route);
	if (!s->ngroups)
		return TC_ACT_SHOT;
	/* a tag the NIC (or veth) took off would go out again with every clone */
	if (skb->vlan_present)
		bpf_skb_vlan_pop(skb);
	{
		__u8 nhl = hl - 1;

		if (bpf_skb_store_bytes(skb, XC_ETH_HLEN + XC_OUTER_HLIM_OFF, &nhl, 1, 0))
			return TC_ACT_SHOT;
	}
	if (has_copy) {
		struct emit_ctx e = {.s = s, .skb = skb, .anonymous = flags & XC_FLAG_ANONYMOUS,
				     .len = XC_ETH_HLEN + blen};

		bpf_loop(XC_MAX_GROUPS, emit_xcast, &e, 0);
	}
	if (need_x2u) {
		/* X2U: the inner header becomes the only IPv6 header (its version|TC|flow, source =
		 * original sender), then UDP; everything between goes. */
		__u8 ip6[XC_IP6_HLEN];
		struct x2u_ctx x = {.s = s, .skb = skb};
		__u32 ck = (__u32)ck0[0] << 8 | ck0[1];
		__u32 cut = toff - XC_IP6_HLEN;
		__u32 udplen = blen - toff;

		__builtin_memcpy(ip6, h.ip + XC_INNER_OFF, 4);
		ip6[XC_IP6_PLEN_OFF] = udplen >> 8;
		ip6[XC_IP6_PLEN_OFF + 1] = udplen & 0xff;
		ip6[XC_IP6_NH_OFF] = XC_NH_UDP;
		ip6[XC_IP6_HLIM_OFF] = hl - 1;
		__builtin_memcpy(ip6 + XC_IP6_SRC_OFF, h.ip + XC_INNER_SRC_OFF, 16);
		__builtin_memset(ip6 + XC_IP6_DST_OFF, 0, 16);
		x.base = ((~ck) & 0xffff) + (0xffff - XC_ALL_XCAST_NODES_FOLDED_SUM);
		x.len = XC_ETH_HLEN + XC_IP6_HLEN + udplen;
		if (bpf_skb_adjust_room(skb, -(__s32)cut, BPF_ADJ_ROOM_NET, 0) ||
		    bpf_skb_store_bytes(skb, XC_ETH_HLEN, ip6, sizeof(ip6), 0)) {
			count(C_EGRESS_ERRORS, 1);
		} else {
			bpf_loop(XC_MAX_GROUPS, emit_x2u, &x, 0);
		}
	}
	for (k = 0; k < XC_MAX_GROUPS; k++) {
		if (k >= s->ngroups || !BOUNDED(k, XC_MAX_GROUPS))
			break;
		if (s->g[XC_GIDX(k)].drop)
			count(C_DROP_NO_SOURCE, 1);
	}
	if (s->sent_copies || s->sent_x2u) {
		count(C_BRANCHED, 1);
		record_latency(bpf_ktime_get_ns() - t0);
	}
	count(C_COPIES_OUT, s->sent_copies);
	count(C_X2U_OUT, s->sent_x2u);
	count(C_BYTES_OUT, s->out_bytes);
	if (s->errors)
		count(C_EGRESS_ERRORS, s->errors);
	if (s->redirect_ifindex) {
		struct redirect_note *note = bpf_map_lookup_elem(&redirect_notes, &zero);

		if (note) {
			note->skb = (__u64)(unsigned long)skb;
			note->x2u = s->last_x2u;
			note->bytes = s->redirect_bytes;
		}
		return bpf_redirect(s->redirect_ifindex, 0);
	}
	return TC_ACT_SHOT;
}

struct sk_buff;

/* fexit on skb_do_redirect(skb): ctx[0] the skb, ctx[1] its result: 0 when the copy was
 * queued; a negative errno (device gone), NET_XMIT_DROP (the device dropped it) or NET_XMIT_CN
 * (a down device's noop qdisc dropped it; a congested qdisc dropped from its flow) otherwise --
 * any non-zero, as bpf_clone_redirect's result for the other copies.  (-EAGAIN, another round,
 * is bpf_redirect_peer's only.) */
SEC("fexit/skb_do_redirect")
int xcast6_redirect_done(__u64 *ctx)
{
	__u32 zero = 0;
	struct redirect_note *note = bpf_map_lookup_elem(&redirect_notes, &zero);
	__u64 skb = ctx[0];
	int ret = (int)ctx[1];

	if (!note || !note->skb)
		return 0;
	if (note->skb != skb) {            /* not our packet's redirect (another TC program's) */
		note->skb = 0;
		return 0;
	}
	note->skb = 0;
	if (ret) {
		count(C_EGRESS_ERRORS, 1);
		count(note->x2u ? C_X2U_OUT : C_COPIES_OUT, (__u64)-1);
		count(C_BYTES_OUT, -(__u64)note->bytes);
	}
	return 0;
}

char _license[] SEC("license") = "GPL";
