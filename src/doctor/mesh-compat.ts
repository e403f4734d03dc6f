/* The checklist for running beside Cilium and Istio, from Cilium's "Integration with Istio" page,
 * when their objects are visible:
 *  - Cilium's socket-LB must stay in the host namespace (bpf-lb-sock-hostns-only: "true") when it
 *    is on: in a pod it rewrites connect(VIP) to a backend before sluice's capture sees the VIP,
 *    and the sidecar loses the service identity (the failure sluice exists to avoid);
 *  - cni-exclusive: "false", or Cilium renames every other CNI config away;
 *  - Cilium L7 (HTTP, Kafka) policy cannot read traffic Istio encrypts: on meshed workloads whose
 *    mTLS mode is not DISABLE the two disagree (split brain);
 *  - with Cilium's overlay (VXLAN/Geneve) and sidecar injection by webhook, istiod must run on
 *    hostNetwork, or an API server outside the overlay cannot call the webhook.
 * And, sluice's own: istio-cni's node agent beside sluice captures the same pods a second time.
 */
import type { Config } from '../config';
import type { Namespace, Pod } from '../k8s/types';
import { decideMode } from '../mesh/mode';
import { rawOf, wasUnreadable, type ClusterObjects, type RawObject } from './objects';
import { fail, ok, warn, type CheckResult } from './report';

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export interface CiliumConfig {
  socketLb: boolean;
  hostnsOnly: boolean;
  kubeProxyReplacement: string;
  cniExclusive?: string;
  overlay: boolean;
  routing: string;
}

/** What cilium-config says, with Cilium's defaults for absent keys (install/kubernetes/cilium). */
export function ciliumConfig(cm: RawObject): CiliumConfig {
  const data = (isObj(cm.data) ? cm.data : {}) as Record<string, string>;
  const kpr = String(data['kube-proxy-replacement'] ?? 'false');
  const sock = data['bpf-lb-sock'];
  // kube-proxy-replacement turns socket-LB on unless bpf-lb-sock says otherwise ("strict" is the
  // pre-1.14 spelling of "true")
  const socketLb = sock !== undefined ? sock === 'true' : kpr === 'true' || kpr === 'strict';
  // routing-mode (1.14+) defaults to tunnel; older configs say tunnel: vxlan|geneve|disabled
  const mode = data['routing-mode'];
  const tunnel = data.tunnel;
  const overlay = mode !== undefined ? mode === 'tunnel' : tunnel === undefined || tunnel === 'vxlan' || tunnel === 'geneve';
  const routing =
    mode !== undefined ? `routing-mode=${mode}` : tunnel !== undefined ? `tunnel=${tunnel}` : 'routing-mode unset (tunnel)';
  return {
    socketLb,
    hostnsOnly: data['bpf-lb-sock-hostns-only'] === 'true',
    kubeProxyReplacement: kpr,
    cniExclusive: data['cni-exclusive'],
    overlay,
    routing,
  };
}

/** A Kubernetes label selector (matchLabels and matchExpressions) against labels. */
export function selects(selector: unknown, labels: Record<string, string>): boolean {
  if (!isObj(selector)) return true;
  const ml = isObj(selector.matchLabels) ? (selector.matchLabels as Record<string, string>) : {};
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== String(v)) return false;
  for (const e of arr(selector.matchExpressions)) {
    if (!isObj(e)) continue;
    const key = String(e.key);
    const values = arr(e.values).map(String);
    const has = Object.hasOwn(labels, key);
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(labels[key])) return false;
        break;
      case 'NotIn':
        if (has && values.includes(labels[key])) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/**
 * Cilium's endpoint labels of a pod, as a selector may name them: bare, or with the `k8s:` (their
 * source) or `any:` prefix; its namespace as `io.kubernetes.pod.namespace`.
 */
function ciliumLabels(pod: Pod): Record<string, string> {
  const out: Record<string, string> = {};
  const labels = { ...pod.metadata.labels, 'io.kubernetes.pod.namespace': pod.metadata.namespace };
  for (const [k, v] of Object.entries(labels)) for (const prefix of ['', 'k8s:', 'any:']) out[prefix + k] = v;
  return out;
}

/** The L7 protocols a Cilium rule section has (`toPorts[].rules`): http, kafka, l7proto; DNS rules read plaintext DNS and are fine. */
function l7Protocols(rules: unknown[]): string[] {
  const found = new Set<string>();
  for (const r of rules) {
    if (!isObj(r)) continue;
    for (const tp of arr(r.toPorts)) {
      if (!isObj(tp) || !isObj(tp.rules)) continue;
      for (const k of ['http', 'kafka', 'l7proto'])
        if (tp.rules[k] !== undefined) found.add(k === 'l7proto' ? String(tp.rules.l7proto) : k.toUpperCase());
    }
  }
  return [...found];
}

/** The specs of a CiliumNetworkPolicy (`spec` and `specs[]`). */
function policySpecs(p: RawObject): Json[] {
  return [p.spec, ...arr(p.specs)].filter(isObj);
}

/**
 * Istio's effective mTLS mode for a pod: the workload PeerAuthentication selecting it, else its
 * namespace's, else the mesh-wide one in the root namespace (istio-system); UNSET inherits;
 * Istio's default is PERMISSIVE.
 */
export function mtlsMode(pod: Pod, peerAuths: RawObject[], rootNamespace = 'istio-system'): string {
  const modeOf = (pa: RawObject | undefined) => {
    const spec = isObj(pa?.spec) ? pa!.spec : {};
    const m = isObj(spec.mtls) ? String(spec.mtls.mode ?? 'UNSET') : 'UNSET';
    return m === 'UNSET' ? undefined : m;
  };
  const hasSelector = (pa: RawObject) => isObj(pa.spec) && isObj(pa.spec.selector) && Object.keys(pa.spec.selector).length > 0;
  const labels = pod.metadata.labels ?? {};
  const ns = pod.metadata.namespace;
  const workload = peerAuths.find(
    (pa) => pa.metadata?.namespace === ns && hasSelector(pa) && selects((pa.spec as Json).selector, labels),
  );
  const namespaced = peerAuths.find((pa) => pa.metadata?.namespace === ns && !hasSelector(pa));
  const mesh = peerAuths.find((pa) => pa.metadata?.namespace === rootNamespace && !hasSelector(pa));
  return modeOf(workload) ?? modeOf(namespaced) ?? modeOf(mesh) ?? 'PERMISSIVE';
}

/** Pods Istio serves (sidecar or ambient), decided as the agent decides. */
function meshedPods(cfg: Config, pods: Pod[], namespaces: Namespace[]): Array<{ pod: Pod; mode: string }> {
  const out: Array<{ pod: Pod; mode: string }> = [];
  for (const pod of pods) {
    const ns = namespaces.find((n) => n.metadata.name === pod.metadata.namespace);
    const d = decideMode(pod, ns, [], {
      excludeNamespaces: cfg.excludeNamespaces,
      dnsCapture: cfg.meshDnsCapture,
      ambientDnsCapture: cfg.ambientDnsCapture,
    });
    if (d.mode !== 'none') out.push({ pod, mode: d.mode });
  }
  return out;
}

function injectionInUse(o: ClusterObjects): boolean {
  const nsLabelled = o.namespaces.some(
    (n) => n.metadata.labels?.['istio-injection'] === 'enabled' || n.metadata.labels?.['istio.io/rev'] !== undefined,
  );
  const injected = o.pods.some((p) => p.metadata.annotations?.['sidecar.istio.io/status'] !== undefined);
  return nsLabelled || injected;
}

export function judgeCompat(cfg: Config, o: ClusterObjects): CheckResult[] {
  const out: CheckResult[] = [];
  const cm = rawOf(o, 'ConfigMap', 'kube-system', 'cilium-config')[0];
  const cnps = [...rawOf(o, 'CiliumNetworkPolicy'), ...rawOf(o, 'CiliumClusterwideNetworkPolicy')];
  const istiods = rawOf(o, 'Deployment').filter((d) => d.metadata?.name === 'istiod' || d.metadata?.labels?.app === 'istiod');
  const peerAuths = rawOf(o, 'PeerAuthentication');
  const istioCni = rawOf(o, 'DaemonSet').filter(
    (d) => d.metadata?.name === 'istio-cni-node' || d.metadata?.labels?.['k8s-app'] === 'istio-cni-node',
  );
  const cilium = cm !== undefined || cnps.length > 0;
  const istio = istiods.length > 0 || peerAuths.length > 0 || istioCni.length > 0;
  const refused = [
    'ConfigMap kube-system/cilium-config',
    'istiod Deployments',
    'CiliumNetworkPolicies',
    'PeerAuthentications',
  ].flatMap((w) => {
    const e = wasUnreadable(o, w);
    return e ? [`${w} (${e})`] : [];
  });
  if (refused.length)
    out.push(
      warn(
        'compat.visible',
        `cannot read ${refused.join('; ')}: the Cilium/Istio checklist may miss something`,
        'grant the doctor read access (get/list) to these, or run it with a kubeconfig that has it',
      ),
    );
  if (!cilium && !istio) {
    out.push(
      ok(
        'compat.visible',
        'no Cilium or Istio objects visible (cilium-config, CiliumNetworkPolicy, istiod, PeerAuthentication, istio-cni): nothing to cross-check',
      ),
    );
    return out;
  }

  const cc = cm ? ciliumConfig(cm) : undefined;
  if (cc) {
    if (cc.socketLb && !cc.hostnsOnly) {
      out.push(
        fail(
          'compat.cilium_socket_lb',
          `Cilium's socket-LB runs in pods (kube-proxy-replacement=${cc.kubeProxyReplacement}, bpf-lb-sock-hostns-only is not "true"): it rewrites a meshed pod's connect(VIP) to a backend before sluice's capture, and the proxy loses the Service`,
          'set bpf-lb-sock-hostns-only: "true" in kube-system/cilium-config (Helm socketLB.hostNamespaceOnly=true) and restart the Cilium agents',
        ),
      );
    } else {
      out.push(
        ok(
          'compat.cilium_socket_lb',
          cc.socketLb
            ? 'Cilium\'s socket-LB stays in the host namespace (bpf-lb-sock-hostns-only: "true")'
            : `Cilium's socket-LB is off (kube-proxy-replacement=${cc.kubeProxyReplacement})`,
        ),
      );
    }
    if (cc.cniExclusive === 'true') {
      out.push(
        warn(
          'compat.cilium_cni_exclusive',
          'cni-exclusive is "true": Cilium renames every other CNI config to *.cilium_bak, so sluice lives on only inside Cilium\'s own conflist',
          'set cni-exclusive: "false" in kube-system/cilium-config (Helm cni.exclusive=false)',
        ),
      );
    } else {
      out.push(
        ok(
          'compat.cilium_cni_exclusive',
          cc.cniExclusive === 'false'
            ? 'cni-exclusive is "false": Cilium leaves other CNI configs alone'
            : 'cni-exclusive is not set: Cilium does not write CNI configs',
        ),
      );
    }
  }

  if (cnps.length > 0) {
    const meshed = meshedPods(cfg, o.pods, o.namespaces);
    const split: string[] = [];
    for (const p of cnps) {
      const clusterwide = p.kind === 'CiliumClusterwideNetworkPolicy';
      const pname = `${p.kind} ${clusterwide ? '' : `${p.metadata?.namespace ?? 'default'}/`}${p.metadata?.name}`;
      for (const spec of policySpecs(p)) {
        const protos = l7Protocols([...arr(spec.ingress), ...arr(spec.egress)]);
        if (protos.length === 0) continue;
        for (const { pod, mode } of meshed) {
          if (!clusterwide && pod.metadata.namespace !== (p.metadata?.namespace ?? 'default')) continue;
          if (!selects(spec.endpointSelector, ciliumLabels(pod))) continue;
          const mtls = mtlsMode(pod, peerAuths);
          if (mtls !== 'DISABLE')
            split.push(
              `${pname} has ${protos.join('/')} rules for ${pod.metadata.namespace}/${pod.metadata.name} (${mode}, Istio mTLS ${mtls})`,
            );
        }
      }
    }
    for (const s of split) {
      out.push(
        fail(
          'compat.l7_split_brain',
          `${s}: Cilium's L7 proxy sees Istio's encrypted bytes and cannot apply the rules (split brain)`,
          'set PeerAuthentication mtls.mode: DISABLE for those workloads, or express the L7 rules as Istio AuthorizationPolicy',
        ),
      );
    }
    if (split.length === 0)
      out.push(
        ok(
          'compat.l7_split_brain',
          `no Cilium L7 rule applies to a meshed pod with Istio mTLS on (${cnps.length} Cilium policies)`,
        ),
      );
  }

  if (cc && istiods.length > 0) {
    const injection = injectionInUse(o);
    const offHost = istiods.filter((d) => {
      const spec = isObj(d.spec) && isObj(d.spec.template) && isObj(d.spec.template.spec) ? d.spec.template.spec : {};
      return spec.hostNetwork !== true;
    });
    if (cc.overlay && injection && offHost.length > 0) {
      const names = offHost.map((d) => `${d.metadata?.namespace}/${d.metadata?.name}`).join(', ');
      out.push(
        warn(
          'compat.istiod_host_network',
          `istiod (${names}) is not on hostNetwork while Cilium runs an overlay (${cc.routing}) and sidecars are injected: an API server outside the overlay (managed control planes) cannot reach the injection webhook`,
          'run istiod with hostNetwork: true, or Cilium in native routing',
        ),
      );
    } else {
      out.push(
        ok(
          'compat.istiod_host_network',
          !cc.overlay
            ? `Cilium routes natively (${cc.routing}): istiod's webhook is reachable from the API server`
            : !injection
              ? 'no sidecar injection in use'
              : 'istiod runs on hostNetwork',
        ),
      );
    }
  }

  for (const d of istioCni) {
    out.push(
      warn(
        'compat.istio_cni',
        `istio-cni's node agent (DaemonSet ${d.metadata?.namespace}/${d.metadata?.name}) is installed beside sluice: it captures the same pods with its own rules and serves ZDS on the same socket`,
        'install Istio without its CNI component (sluice replaces it; see "Running Istio\'s ztunnel on sluice")',
      ),
    );
  }
  return out;
}
