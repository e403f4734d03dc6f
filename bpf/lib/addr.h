/* Address helpers over struct sl_addr (IPv4 stored IPv4-mapped). Included by the programs. */
#ifndef SLUICE_ADDR_H
#define SLUICE_ADDR_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include "shared.h"

/* Loads a context field into a register right here. Without it clang may merge the loads of two
 * branches into one through a computed ctx/sock pointer, which the verifier refuses.
 */
#define SL_LOAD(field)                        \
	({                                    \
		__u32 __v = (field);          \
		asm volatile("" : "+r"(__v)); \
		__v;                          \
	})

static __always_inline void addr_from_v4(struct sl_addr *a, __u32 ip4)
{
	__u32 *w = (__u32 *)a->b;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

static __always_inline void addr_from_words(struct sl_addr *a, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	__u32 *w = (__u32 *)a->b;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = w3;
}

static __always_inline __u32 addr_v4(const struct sl_addr *a)
{
	return ((const __u32 *)a->b)[3];
}

static __always_inline int addr_is_mapped_v4(const struct sl_addr *a)
{
	const __u32 *w = (const __u32 *)a->b;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int addr_eq(const struct sl_addr *x, const struct sl_addr *y)
{
	const __u32 *a = (const __u32 *)x->b, *b = (const __u32 *)y->b;

	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* 127.0.0.0/8 (also IPv4-mapped) or ::1 */
static __always_inline int addr_is_loopback(const struct sl_addr *a)
{
	const __u32 *w = (const __u32 *)a->b;

	if (addr_is_mapped_v4(a))
		return (bpf_ntohl(w[3]) >> 24) == 127;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

/* ::6, the source Envoy uses to hand inbound IPv6 connections to the app (Istio puts it on lo) */
static __always_inline int addr_is_v6_passthrough(const struct sl_addr *a)
{
	const __u32 *w = (const __u32 *)a->b;

	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(6);
}

/* Is `a` inside `c`? Prefix lengths are over all 128 bits. */
static __always_inline int addr_in_cidr(const struct sl_addr *a, const struct sl_cidr *c)
{
	const __u32 *x = (const __u32 *)a->b, *y = (const __u32 *)c->addr.b;
	__u32 prefix = c->prefix, i, bits, mask;

	for (i = 0; i < 4; i++) {
		bits = prefix > 32 ? 32 : prefix;
		prefix -= bits;
		if (bits == 0)
			return 1;
		mask = bits == 32 ? 0xffffffff : ~(0xffffffffU >> bits);
		if ((bpf_ntohl(x[i]) & mask) != (bpf_ntohl(y[i]) & mask))
			return 0;
	}
	return 1;
}

#endif /* SLUICE_ADDR_H */
