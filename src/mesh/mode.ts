/* Which pods are captured, and how: Istio's rules applied to the Pod and Namespace objects. */
import type { Policy } from '../bpf/layout';
import type { Namespace, Pod } from '../k8s/types';
import { ANNOTATION, sidecarPolicy } from './sidecar-policy';

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
  if (annotations[ANNOTATION.status] !== undefined) {
    const r = sidecarPolicy(annotations, podIps, { dnsCapture: opts.dnsCapture });
    if (r.refused) return { mode: 'none', rule: `sidecar refused: ${r.refused}`, refused: r.refused };
    return { mode: 'sidecar', rule: `annotation ${ANNOTATION.status}`, policy: r.policy };
  }
  void ns;
  return { mode: 'none', rule: `no ${ANNOTATION.status} annotation` };
}
