/* Which pods are captured, and how: Istio's rules applied to the Pod and Namespace objects. */
import type { Policy } from '../bpf/layout';
import type { Namespace, Pod } from '../k8s/types';
import { ANNOTATION, PROXY_PORTS, sidecarPolicy } from './sidecar-policy';

export const AMBIENT = {
  dataplaneMode: 'istio.io/dataplane-mode',
  redirection: 'ambient.istio.io/redirection',
} as const;

/** Ambient: TCP out to the node proxy's 15001, in to its 15006 (15008 untouched), in the pod's netns. */
function ambientPolicy(podIps: string[]): Policy {
  return {
    mode: 'ambient', flags: 0, outboundPort: PROXY_PORTS.outbound, inboundPort: PROXY_PORTS.inbound, dnsPort: PROXY_PORTS.dns,
    podIps, includeCidrs: [], excludeCidrs: [], includeOutPorts: [], excludeOutPorts: [], includeInPorts: [], excludeInPorts: [],
  };
}

export interface ModeDecision {
  mode: 'sidecar' | 'ambient' | 'none';
  /** the rule that decided, for logs and `endpoint list` */
  rule: string;
  policy?: Policy;
  /** set when the pod asked for capture but cannot have it (an invalid annotation) */
  refused?: string;
}

export interface ModeOptions {
  excludeNamespaces: readonly string[];
  /** mesh-dns-capture (default false, as in Istio) */
  dnsCapture?: boolean;
}

export function decideMode(pod: Pod | undefined, ns: Namespace | undefined, podIps: string[], opts: ModeOptions): ModeDecision {
  if (!pod) return { mode: 'none', rule: 'no Pod object for this endpoint' };
  const namespace = pod.metadata.namespace;
  if (opts.excludeNamespaces.includes(namespace)) return { mode: 'none', rule: `namespace ${namespace} is in exclude-namespaces` };
  if (pod.spec?.hostNetwork) return { mode: 'none', rule: 'the pod uses the host network' };
  const annotations = pod.metadata.annotations ?? {};
  // sidecar wins over ambient
  if (annotations[ANNOTATION.status] !== undefined) {
    const r = sidecarPolicy(annotations, podIps, { dnsCapture: opts.dnsCapture });
    if (r.refused) return { mode: 'none', rule: `sidecar refused: ${r.refused}`, refused: r.refused };
    return { mode: 'sidecar', rule: `annotation ${ANNOTATION.status}`, policy: r.policy };
  }
  const labels = pod.metadata.labels ?? {};
  if (annotations[AMBIENT.redirection] === 'disabled') return { mode: 'none', rule: `annotation ${AMBIENT.redirection}=disabled` };
  if (labels[AMBIENT.dataplaneMode] === 'none') return { mode: 'none', rule: `pod label ${AMBIENT.dataplaneMode}=none` };
  if (labels[AMBIENT.dataplaneMode] === 'ambient') return { mode: 'ambient', rule: `pod label ${AMBIENT.dataplaneMode}=ambient`, policy: ambientPolicy(podIps) };
  if (ns?.metadata.labels?.[AMBIENT.dataplaneMode] === 'ambient') {
    return { mode: 'ambient', rule: `namespace label ${AMBIENT.dataplaneMode}=ambient`, policy: ambientPolicy(podIps) };
  }
  return { mode: 'none', rule: `no ${ANNOTATION.status} annotation, no ${AMBIENT.dataplaneMode}=ambient label` };
}
