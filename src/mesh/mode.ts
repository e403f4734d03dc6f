/* Which pods are captured, and how: Istio's rules applied to the Pod and Namespace objects. */
import { POL_DNS, POL_NO_INBOUND, type Policy } from '../bpf/layout';
import type { Namespace, Pod } from '../k8s/types';
import { parseGoBool } from './parse-bool';
import { selectSidecar, type DnsCaptureChoice, type ProxyIdentity } from './sidecar-pod';
import { ANNOTATION, PROXY_PORTS, sidecarPolicy } from './sidecar-policy';

export const AMBIENT = {
  dataplaneMode: 'istio.io/dataplane-mode',
  redirection: 'ambient.istio.io/redirection',
  dnsCapture: 'ambient.istio.io/dns-capture',
  bypassInboundCapture: 'ambient.istio.io/bypass-inbound-capture',
} as const;

/**
 * Ambient: TCP out to the node proxy's 15001, in to its 15006 (15008 untouched), in the pod's
 * netns; DNS to its 15053 unless turned off for the node (ambient-dns-capture) or the pod
 * (ambient.istio.io/dns-capture); no inbound capture with ambient.istio.io/bypass-inbound-capture.
 */
function ambientPolicy(podIps: string[], annotations: Record<string, string>, dnsDefault: boolean): Policy {
  let flags = (parseGoBool(annotations[AMBIENT.dnsCapture]) ?? dnsDefault) ? POL_DNS : 0;
  if (parseGoBool(annotations[AMBIENT.bypassInboundCapture])) flags |= POL_NO_INBOUND;
  return {
    mode: 'ambient',
    flags,
    outboundPort: PROXY_PORTS.outbound,
    inboundPort: PROXY_PORTS.inbound,
    dnsPort: PROXY_PORTS.dns,
    podIps,
    includeCidrs: [],
    excludeCidrs: [],
    includeOutPorts: [],
    excludeOutPorts: [],
    includeInPorts: [],
    excludeInPorts: [],
  };
}

export interface ModeDecision {
  mode: 'sidecar' | 'ambient' | 'none';
  /** the rule that decided, for logs and `endpoint list` */
  rule: string;
  policy?: Policy;
  /**
   * set when the pod asked for capture but cannot have it: an invalid annotation, or one whose
   * traffic a socket hook cannot see
   */
  refused?: string;
  /** sidecar pods istio-cni would redirect: the uid/gid of the proxy's own sockets, never captured */
  proxy?: ProxyIdentity;
  /** sidecar pods istio-cni would redirect: DNS capture and what decided it (policy carries the flag) */
  dns?: DnsCaptureChoice;
}

export interface ModeOptions {
  excludeNamespaces: readonly string[];
  /** mesh-dns-capture: sidecar DNS capture for proxies without ISTIO_META_DNS_CAPTURE (default false, as in Istio) */
  dnsCapture?: boolean;
  /** mesh-proxy-uid / mesh-proxy-gid: for proxies whose container sets no runAsUser/runAsGroup (default 1337) */
  proxyUid?: number;
  proxyGid?: number;
  /** ambient-dns-capture (default true, as Istio >= 1.25) */
  ambientDnsCapture?: boolean;
}

export function decideMode(pod: Pod | undefined, ns: Namespace | undefined, podIps: string[], opts: ModeOptions): ModeDecision {
  if (!pod) return { mode: 'none', rule: 'no Pod object for this endpoint' };
  const namespace = pod.metadata.namespace;
  if (opts.excludeNamespaces.includes(namespace))
    return { mode: 'none', rule: `namespace ${namespace} is in exclude-namespaces` };
  if (pod.spec?.hostNetwork) return { mode: 'none', rule: 'the pod uses the host network' };
  const annotations = pod.metadata.annotations ?? {};
  // a pod the injector marked is never ambient (istio-cni's enablement selectors skip it), and is
  // a sidecar pod only when istio-cni would redirect it
  if (annotations[ANNOTATION.status] !== undefined) {
    const sel = selectSidecar(pod, { proxyUid: opts.proxyUid, proxyGid: opts.proxyGid, dnsCapture: opts.dnsCapture });
    if (!sel.selected) return { mode: 'none', rule: sel.rule };
    const r = sidecarPolicy(annotations, podIps, { dnsCapture: sel.dns.capture });
    if (r.refused) return { mode: 'none', rule: `sidecar refused: ${r.refused}`, refused: r.refused };
    // the kernel compares each connect's uid/gid with this pod's proxy (OpenShift: random uids)
    const policy = r.policy && { ...r.policy, proxyUid: sel.proxy.uid, proxyGid: sel.proxy.gid };
    return { mode: 'sidecar', rule: sel.rule, policy, proxy: sel.proxy, dns: sel.dns };
  }
  const labels = pod.metadata.labels ?? {};
  if (annotations[AMBIENT.redirection] === 'disabled')
    return { mode: 'none', rule: `annotation ${AMBIENT.redirection}=disabled` };
  if (labels[AMBIENT.dataplaneMode] === 'none') return { mode: 'none', rule: `pod label ${AMBIENT.dataplaneMode}=none` };
  if (labels[AMBIENT.dataplaneMode] === 'ambient')
    return {
      mode: 'ambient',
      rule: `pod label ${AMBIENT.dataplaneMode}=ambient`,
      policy: ambientPolicy(podIps, annotations, opts.ambientDnsCapture ?? true),
    };
  if (ns?.metadata.labels?.[AMBIENT.dataplaneMode] === 'ambient') {
    return {
      mode: 'ambient',
      rule: `namespace label ${AMBIENT.dataplaneMode}=ambient`,
      policy: ambientPolicy(podIps, annotations, opts.ambientDnsCapture ?? true),
    };
  }
  return { mode: 'none', rule: `no ${ANNOTATION.status} annotation, no ${AMBIENT.dataplaneMode}=ambient label` };
}
