/* The cluster objects the doctor judges against, from where the agent gets them: the objects
 * directory (standalone mode) or the API server. Besides the kinds the agent models (Services,
 * EndpointSlices, Pods, Namespaces, Nodes), the objects that tell whether Cilium or Istio run
 * beside sluice (ConfigMap kube-system/cilium-config, istiod and kube-proxy workloads,
 * CiliumNetworkPolicies, PeerAuthentications) are kept raw.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config';
import { ApiClient, ApiError } from '../k8s/api-client';
import { decodeDocuments, isManifestFileName } from '../k8s/dir-source';
import type { EndpointSlice, Namespace, Node, Pod, Service } from '../k8s/types';
import { expandList, parseObject, UnsupportedKindError } from '../k8s/validate';

/** A decoded object of any kind, as written (only the fields the checks read are typed). */
export interface RawObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface ClusterObjects {
  source: 'standalone' | 'api';
  /** the objects directory or the API server URL */
  origin: string;
  services: Service[];
  slices: EndpointSlice[];
  pods: Pod[];
  namespaces: Namespace[];
  nodes: Node[];
  /** objects of kinds the agent does not model */
  raw: RawObject[];
  /** what could not be read, and why (an API server that refuses, a file that does not parse) */
  unreadable: Array<{ what: string; error: string }>;
  /** malformed documents, skipped (the agent skips them too) */
  skipped: Array<{ what: string; error: string }>;
  /** the API server answered (api source only) and with which version */
  api?: { reachable: boolean; version?: string; error?: string };
}

function emptyObjects(source: ClusterObjects['source'], origin: string): ClusterObjects {
  return { source, origin, services: [], slices: [], pods: [], namespaces: [], nodes: [], raw: [], unreadable: [], skipped: [] };
}

/**
 * Sorts a decoded document into the typed lists or the raw ones; malformed ones are reported.
 * `raw`: keep even modelled kinds raw (kube-proxy's Pods are evidence, not this node's pods).
 */
function addDocument(out: ClusterObjects, doc: unknown, where: string, raw = false): void {
  for (const item of expandList(doc)) {
    if (raw) {
      out.raw.push(item as RawObject);
      continue;
    }
    try {
      const obj = parseObject(item);
      if (obj.kind === 'Service') out.services.push(obj);
      else if (obj.kind === 'EndpointSlice') out.slices.push(obj);
      else if (obj.kind === 'Pod') out.pods.push(obj);
      else if (obj.kind === 'Namespace') out.namespaces.push(obj);
      else out.nodes.push(obj);
    } catch (e) {
      if (e instanceof UnsupportedKindError) out.raw.push(item as RawObject);
      else out.skipped.push({ what: where, error: (e as Error).message });
    }
  }
}

/** Standalone mode: every manifest of the directory, as the agent's DirectorySource reads it. */
export function readObjectsDir(dir: string): ClusterObjects {
  const out = emptyObjects('standalone', dir);
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter(isManifestFileName).sort();
  } catch (e) {
    out.unreadable.push({ what: `objects directory ${dir}`, error: (e as Error).message });
    return out;
  }
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      for (const doc of decodeDocuments(file, fs.readFileSync(file, 'utf8'))) addDocument(out, doc, file);
    } catch (e) {
      out.unreadable.push({ what: file, error: (e as Error).message.split('\n')[0] });
    }
  }
  return out;
}

/** One list (or get) of the API: 404 means "none" (a CRD that is not installed), else unreadable. */
interface ApiRead {
  what: string;
  path: string;
  /** keep the answer raw (see addDocument) */
  raw?: boolean;
}

const API_TIMEOUT_MS = 5000;

function apiReads(nodeName: string): ApiRead[] {
  const node = encodeURIComponent(nodeName);
  return [
    { what: 'Services', path: '/api/v1/services' },
    { what: 'EndpointSlices', path: '/apis/discovery.k8s.io/v1/endpointslices' },
    { what: 'Namespaces', path: '/api/v1/namespaces' },
    { what: "this node's Pods", path: `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${nodeName}`)}` },
    { what: 'this Node', path: `/api/v1/nodes?fieldSelector=${encodeURIComponent(`metadata.name=${node}`)}` },
    { what: 'ConfigMap kube-system/cilium-config', path: '/api/v1/namespaces/kube-system/configmaps/cilium-config' },
    { what: 'DaemonSet kube-system/kube-proxy', path: '/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy' },
    {
      what: 'kube-proxy Pods',
      path: `/api/v1/namespaces/kube-system/pods?labelSelector=${encodeURIComponent('k8s-app=kube-proxy')}`,
      raw: true,
    },
    { what: 'istiod Deployments', path: `/apis/apps/v1/deployments?labelSelector=${encodeURIComponent('app=istiod')}` },
    {
      what: 'istio-cni DaemonSets',
      path: `/apis/apps/v1/daemonsets?labelSelector=${encodeURIComponent('k8s-app=istio-cni-node')}`,
    },
    { what: 'CiliumNetworkPolicies', path: '/apis/cilium.io/v2/ciliumnetworkpolicies' },
    { what: 'CiliumClusterwideNetworkPolicies', path: '/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies' },
    { what: 'PeerAuthentications', path: '/apis/security.istio.io/v1/peerauthentications' },
  ];
}

/** API mode: the same objects the agent watches, plus the Cilium/Istio ones (each may be refused by RBAC). */
export async function readObjectsApi(cfg: Config): Promise<ClusterObjects> {
  let client: ApiClient;
  try {
    client = await ApiClient.create({ kubeconfig: cfg.k8sKubeconfig || undefined, server: cfg.k8sApiServer || undefined });
  } catch (e) {
    const out = emptyObjects('api', cfg.k8sApiServer || cfg.k8sKubeconfig || 'in-cluster');
    out.api = { reachable: false, error: `cannot resolve API credentials: ${(e as Error).message}` };
    return out;
  }
  const out = emptyObjects('api', client.serverUrl().origin);
  try {
    const v = await client.request<{ gitVersion?: string }>('GET', '/version', undefined, { timeoutMs: API_TIMEOUT_MS });
    out.api = { reachable: true, version: v?.gitVersion };
  } catch (e) {
    out.api = { reachable: false, error: (e as Error).message };
    return out;
  }
  for (const read of apiReads(cfg.nodeName)) {
    try {
      addDocument(out, await client.request('GET', read.path, undefined, { timeoutMs: API_TIMEOUT_MS }), read.what, read.raw);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) continue;
      out.unreadable.push({ what: read.what, error: (e as Error).message });
    }
  }
  return out;
}

export function readClusterObjects(cfg: Config): Promise<ClusterObjects> {
  return cfg.source === 'api' ? readObjectsApi(cfg) : Promise.resolve(readObjectsDir(cfg.k8sObjectsDir));
}

/** Raw objects of a kind (and optionally a namespace/name). */
export function rawOf(objects: ClusterObjects, kind: string, namespace?: string, name?: string): RawObject[] {
  return objects.raw.filter(
    (o) =>
      o.kind === kind &&
      (namespace === undefined || (o.metadata?.namespace ?? 'default') === namespace) &&
      (name === undefined || o.metadata?.name === name),
  );
}

/** Whether a read of this kind was refused: then its absence proves nothing. */
export function wasUnreadable(objects: ClusterObjects, what: string): string | undefined {
  return objects.unreadable.find((u) => u.what === what)?.error;
}
