/* The cluster source: the objects directory readable (standalone), or the API server reachable
 * (API mode); and, on a cluster without kube-proxy, `k8s-api-server` set. In a pod the agent
 * finds the API server through the kubernetes Service VIP, which only a service proxy serves:
 * without kube-proxy that is sluice itself (or Cilium's kube-proxy replacement), so the agent could
 * not sync on its first start. Cilium asks for k8sServiceHost for the same reason.
 */
import type { Config } from '../config';
import { ciliumConfig } from './mesh-compat';
import { rawOf, wasUnreadable, type ClusterObjects } from './objects';
import { fail, ok, warn, type CheckResult } from './report';

export function judgeCluster(cfg: Config, o: ClusterObjects): CheckResult[] {
  const out: CheckResult[] = [];
  if (o.source === 'standalone') {
    const bad = o.unreadable.find((u) => u.what.startsWith('objects directory'));
    if (bad)
      out.push(
        fail(
          'cluster.source',
          `standalone mode, but ${bad.what} cannot be read: ${bad.error}`,
          "create k8s-objects-dir with the cluster's objects, or configure k8s-api-server",
        ),
      );
    else {
      const n = o.services.length + o.slices.length + o.pods.length + o.namespaces.length + o.nodes.length;
      out.push(ok('cluster.source', `standalone mode: ${n} objects from ${o.origin} (no API server involved)`));
    }
    for (const u of o.unreadable.filter((x) => x !== bad)) {
      out.push(
        warn(
          'cluster.source',
          `${u.what} does not parse (${u.error}): the agent serves what it last read from it`,
          'fix the manifest',
        ),
      );
    }
    for (const u of o.skipped)
      out.push(warn('cluster.source', `${u.what}: a malformed object, skipped by the agent too: ${u.error}`, 'fix the manifest'));
    return out;
  }
  if (!o.api?.reachable) {
    out.push(
      fail(
        'cluster.source',
        `API server ${o.origin} unreachable: ${o.api?.error ?? 'no answer'}; the datapath keeps its last state`,
        'check k8s-api-server / k8s-kubeconfig, the credentials and the network path to the API server',
      ),
    );
    return out;
  }
  out.push(ok('cluster.source', `API server ${o.origin} reachable (${o.api.version ?? 'version unknown'})`));

  const dsError = wasUnreadable(o, 'DaemonSet kube-system/kube-proxy');
  const podsError = wasUnreadable(o, 'kube-proxy Pods');
  const kubeProxy =
    rawOf(o, 'DaemonSet', 'kube-system', 'kube-proxy').length > 0 ||
    rawOf(o, 'Pod', 'kube-system').some((p) => p.metadata?.labels?.['k8s-app'] === 'kube-proxy');
  const cm = rawOf(o, 'ConfigMap', 'kube-system', 'cilium-config')[0];
  const ciliumKpr = cm !== undefined && ['true', 'strict'].includes(ciliumConfig(cm).kubeProxyReplacement);
  const id = 'cluster.kube_proxy';
  if (kubeProxy) out.push(ok(id, 'kube-proxy runs: the kubernetes Service VIP is served without sluice'));
  else if (dsError && podsError)
    out.push(
      warn(
        id,
        `cannot tell whether kube-proxy runs (${dsError})`,
        'grant get on daemonsets in kube-system, or set k8s-api-server anyway',
      ),
    );
  else if (cfg.k8sApiServer)
    out.push(
      ok(
        id,
        `no kube-proxy; k8s-api-server is set (${cfg.k8sApiServer}): the agent does not need a Service VIP to reach the API server`,
      ),
    );
  else if (ciliumKpr) out.push(ok(id, "no kube-proxy; Cilium's kube-proxy replacement serves the kubernetes Service"));
  else {
    out.push(
      fail(
        id,
        'no kube-proxy DaemonSet or Pods visible and k8s-api-server is not set: the agent reaches the API server through the kubernetes Service VIP, which nothing serves until sluice itself has synced (first start, after an uninstall)',
        "set k8s-api-server to the API server's own address (as Cilium's k8sServiceHost)",
      ),
    );
  }
  return out;
}
