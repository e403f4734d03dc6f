/* Stand-ins for the helpers the decisions under test call that need a real socket or the calling
 * task, and the maps that carry a test's input and output. Included by the test programs after
 * <bpf/bpf_helpers.h> and before the bpf/lib header under test: each helper's name is defined to
 * its stand-in, which answers from the case in t_sock_in (Cilium's bpf/tests stub helpers the
 * same way). The maps the decisions read (sl_endpoints, sl_lb_svc ...) are the real ones, filled
 * by the test.
 */
#ifndef SLUICE_TEST_MOCKS_H
#define SLUICE_TEST_MOCKS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "decision_io.h"
#include "../../bpf/lib/addr.h"
#include "../../bpf/lib/capture_maps.h"
#include "../../bpf/lib/lb_maps.h"

#define T_IO_MAP(name, value_type)                \
	struct {                                  \
		__uint(type, BPF_MAP_TYPE_ARRAY); \
		__uint(max_entries, 1);           \
		__type(key, __u32);               \
		__type(value, value_type);        \
	} name SEC(".maps")

T_IO_MAP(t_sock_in, struct t_sock_call);
T_IO_MAP(t_sock_out, struct t_sock_result);
T_IO_MAP(t_inbound_in, struct t_inbound_call);
T_IO_MAP(t_inbound_out, struct t_inbound_result);
T_IO_MAP(t_bypass_in, struct t_bypass_call);
T_IO_MAP(t_bypass_out, struct t_bypass_result);
/* the socket's storage in sl_cap_sock and sl_lb_sock_rev, which the test reads afterwards */
T_IO_MAP(t_cap_storage, struct sl_orig_dst);
T_IO_MAP(t_rev_storage, struct sl_sock_rev);

static __always_inline void *t_io(void *map)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(map, &zero);
}

static __always_inline __u64 t_get_netns_cookie(void *ctx)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	return c ? c->netns_cookie : 0;
}

static __always_inline __u64 t_get_socket_cookie(void *ctx)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	return c ? c->socket_cookie : 0;
}

static __always_inline __u64 t_get_current_uid_gid(void)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	return c ? ((__u64)c->gid << 32) | c->uid : 0;
}

static __always_inline __u32 t_get_prandom_u32(void)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	return c ? c->random : 0;
}

static __always_inline __u64 t_ktime_get_ns(void)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	return c ? c->now_ns : 0;
}

static __always_inline long t_set_retval(int retval)
{
	struct t_sock_result *r = t_io(&t_sock_out);

	if (r)
		r->retval = retval;
	return 0;
}

/* bpf_bind: records the address (sockaddr_in: addr at byte 4; sockaddr_in6: at byte 8). */
static __always_inline long t_bind(void *ctx, void *addr, int addr_len)
{
	struct t_sock_result *r = t_io(&t_sock_out);
	const __u32 *w = addr;

	if (!r)
		return 0;
	r->bound = 1;
	if (addr_len == 16)
		addr_from_v4(&r->bound_addr, w[1]);
	else
		addr_from_words(&r->bound_addr, w[2], w[3], w[4], w[5]);
	return 0;
}

/* bpf_sk_storage_get: the one socket's storage of each map, unless the case has none. */
static __always_inline void *t_sk_storage_get(void *map, void *sk, void *value, __u64 flags)
{
	struct t_sock_call *c = t_io(&t_sock_in);

	if (!c || c->no_storage || !sk)
		return NULL;
	if (map == (void *)&sl_cap_sock)
		return t_io(&t_cap_storage);
	if (map == (void *)&sl_lb_sock_rev)
		return t_io(&t_rev_storage);
	return NULL;
}

#define bpf_get_netns_cookie	t_get_netns_cookie
#define bpf_get_socket_cookie	t_get_socket_cookie
#define bpf_get_current_uid_gid t_get_current_uid_gid
#define bpf_get_prandom_u32	t_get_prandom_u32
#define bpf_ktime_get_ns	t_ktime_get_ns
#define bpf_set_retval		t_set_retval
#define bpf_bind		t_bind
#define bpf_sk_storage_get	t_sk_storage_get

/* The sock_addr hook's context for a case: family, protocol, and the socket (its mark and the
 * address it is bound to), or none.
 */
static __always_inline void t_sock_addr(const struct t_sock_call *c, struct bpf_sock_addr *sa,
					struct bpf_sock *sk)
{
	sa->user_family = c->family;
	sa->protocol = c->protocol;
	sk->family = c->family;
	sk->protocol = c->protocol;
	sk->mark = c->sk_mark;
	sk->src_ip4 = c->sk_src_ip4;
	sk->src_ip6[0] = c->sk_src_ip6[0];
	sk->src_ip6[1] = c->sk_src_ip6[1];
	sk->src_ip6[2] = c->sk_src_ip6[2];
	sk->src_ip6[3] = c->sk_src_ip6[3];
	sa->sk = c->has_sk ? sk : NULL;
}

#endif /* SLUICE_TEST_MOCKS_H */
