/* contract-constants.c: prints, as one JSON object, every number the C side shares with the
 * TypeScript side, read from the headers themselves: the #defines and enums of bpf/lib/shared.h,
 * bpf/lib/verdicts.h (datapath event types and reasons included) and bpf/lib/mesh_consts.h, the protocol numbers, and the CNI facts of
 * cni/cni-spec.h (the versions the plugin accepts, its VERSION answer, its error codes).
 * test/unit/contract-constants.test.ts compares the output with src/bpf and src/cni, and checks
 * that every constant those headers define is printed here.
 */
#include <netinet/in.h>
#include <stdio.h>

#include "../../bpf/lib/shared.h"
#include "../../bpf/lib/verdicts.h"
#include "../../bpf/lib/mesh_consts.h"
#include "../../cni/cni-spec.h"

static const char *sep = "";

static void print_number(const char *name, long long value)
{
	printf("%s\n    \"%s\": %lld", sep, name, value);
	sep = ",";
}

#define NUMBER(name) print_number(#name, (long long)(name))

int main(void)
{
	unsigned i;

	printf("{\n  \"numbers\": {");
	/* shared.h */
	NUMBER(SL_SVC_F_AFFINITY);
	NUMBER(SL_SVC_F_EXTERNAL);
	NUMBER(SL_SVC_F_NO_LOCAL);
	NUMBER(SL_SVC_F_NODEPORT);
	NUMBER(SL_SOCK_REV_SLOTS);
	NUMBER(SL_MODE_NONE);
	NUMBER(SL_MODE_SIDECAR);
	NUMBER(SL_MODE_AMBIENT);
	NUMBER(SL_POL_OUT_ALL);
	NUMBER(SL_POL_IN_ALL);
	NUMBER(SL_POL_DNS);
	NUMBER(SL_POL_LOOPBACK_RANGE);
	NUMBER(SL_POL_NO_INBOUND);
	NUMBER(SL_POL_TPROXY);
	NUMBER(SL_MAX_CIDRS);
	NUMBER(SL_MAX_PORTS);
	NUMBER(SL_MAX_POD_IPS);
	NUMBER(SL_LISTENER_SLOTS);
	/* verdicts.h */
	NUMBER(SL_REJECT);
	NUMBER(SL_ALLOW);
	NUMBER(CAP_NONE);
	NUMBER(CAP_PROXY);
	NUMBER(CAP_REDIRECTED);
	NUMBER(CAP_REFUSED);
	NUMBER(CAP_IN_PASS);
	NUMBER(CAP_IN_STEER);
	NUMBER(CAP_STAT_OUTBOUND);
	NUMBER(CAP_STAT_INBOUND);
	NUMBER(CAP_STAT_BYPASS);
	NUMBER(CAP_STAT_NO_LISTENER);
	NUMBER(SL_CNT_TRANSLATED);
	NUMBER(SL_CNT_NO_BACKEND);
	NUMBER(SL_CNT_HOSTNS_SKIP);
	NUMBER(SL_CNT_SLOT_MISS);
	NUMBER(SL_CNT_REV_TRANSLATED);
	NUMBER(SL_CNT_AFFINITY_HIT);
	NUMBER(SL_CNT_NO_STORAGE);
	NUMBER(SL_CNT_NO_LOCAL_BACKEND);
	NUMBER(SL_CNT_POD_OPT_OUT);
	NUMBER(SL_CNT_SOCK_DESTROYED);
	NUMBER(SL_CNT_MAX);
	NUMBER(SL_EV_LB_TRANSLATE);
	NUMBER(SL_EV_LB_REFUSE);
	NUMBER(SL_EV_CAPTURE_OUT);
	NUMBER(SL_EV_CAPTURE_IN);
	NUMBER(SL_EV_BYPASS_OUT);
	NUMBER(SL_EV_BYPASS_IN);
	NUMBER(SL_EV_NO_LISTENER);
	NUMBER(SL_EV_SOCK_DESTROY);
	NUMBER(SL_REASON_NONE);
	NUMBER(SL_REASON_AFFINITY);
	NUMBER(SL_REASON_NO_BACKEND);
	NUMBER(SL_REASON_NO_LOCAL_BACKEND);
	NUMBER(SL_REASON_HOSTNS_ONLY);
	NUMBER(SL_REASON_POD_OPT_OUT);
	NUMBER(SL_REASON_SLOT_MISS);
	NUMBER(SL_REASON_HANDSHAKES_FULL);
	NUMBER(SL_REASON_NO_STORAGE);
	NUMBER(SL_REASON_PROXY_UID);
	NUMBER(SL_REASON_PROXY_GID);
	NUMBER(SL_REASON_PROXY_MARK);
	NUMBER(SL_REASON_EXCLUDED_PORT);
	NUMBER(SL_REASON_INBOUND_PASSTHROUGH);
	NUMBER(SL_REASON_LOCAL);
	NUMBER(SL_REASON_LOOPBACK);
	NUMBER(SL_REASON_EXCLUDED_CIDR);
	NUMBER(SL_REASON_NOT_INCLUDED);
	NUMBER(SL_REASON_NOT_DNS_SERVER);
	NUMBER(SL_REASON_NO_LISTENER);
	NUMBER(SL_REASON_FROM_POD);
	NUMBER(SL_REASON_BYPASS_FLOW);
	NUMBER(SL_REASON_HBONE);
	NUMBER(SL_REASON_NO_INBOUND);
	NUMBER(SL_REASON_PROBE_SNAT);
	NUMBER(SL_REASON_PROXY_PORT);
	NUMBER(SL_REASON_BACKEND_GONE);
	/* mesh_consts.h */
	NUMBER(SL_PORT_OUTBOUND);
	NUMBER(SL_PORT_INBOUND);
	NUMBER(SL_PORT_HBONE);
	NUMBER(SL_PORT_DNS);
	NUMBER(SL_MAX_DNS_SERVERS);
	NUMBER(SL_TPROXY_MARK);
	NUMBER(SL_PROXY_MARK);
	NUMBER(SL_PROXY_MARK_MASK);
	NUMBER(SL_INBOUND_MARK);
	NUMBER(SL_INBOUND_MARK_MASK);
	/* the protocols of sl_svc_key.proto and sl_backend.proto */
	NUMBER(IPPROTO_TCP);
	NUMBER(IPPROTO_UDP);
	/* cni-spec.h */
	NUMBER(CNI_ERR_INCOMPATIBLE_VERSION);
	NUMBER(CNI_ERR_INVALID_ENV);
	NUMBER(CNI_ERR_IO);
	NUMBER(CNI_ERR_DECODE);
	NUMBER(CNI_ERR_INVALID_CONFIG);
	NUMBER(CNI_ERR_TRY_LATER);
	NUMBER(CNI_ERR_NOT_AVAILABLE);
	printf("\n  },\n  \"cniAccepted\": [");
	for (i = 0; i < cni_n_supported_versions; i++)
		printf("%s\"%s\"", i ? ", " : "", cni_supported_versions[i]);
	printf("],\n  \"cniVersionAnswer\": %s,\n  \"cniNewest\": \"%s\"\n}\n",
	       cni_supported_versions_json, CNI_NEWEST_VERSION);
	return 0;
}
