/* Which pods istio-cni sets up sidecar redirection for, and the per-pod settings it takes from the
 * istio-proxy container: its checks in its order (istio/istio cni/pkg/plugin/plugin.go, doAddRun;
 * kubernetes.go, ExtractPodInfo; sidecar_redirect.go, NewRedirect), read from our Pod objects.
 * The traffic annotations themselves are sidecar-policy.ts's.
 */
import type { Container, Pod } from '../k8s/types';
import { parseGoBool } from './parse-bool';

export const CONTAINER = { proxy: 'istio-proxy', init: 'istio-init' } as const;

/** Where the injector's opt-out is written: the label wins over the annotation when both are set. */
export const INJECT_KEY = 'sidecar.istio.io/inject';

/** The istio-proxy env istio-cni reads. */
export const PROXY_ENV = { disableEnvoy: 'DISABLE_ENVOY', dnsCapture: 'ISTIO_META_DNS_CAPTURE' } as const;

/** istio-cni's own default proxy uid/gid (defaultNoRedirectUID/GID), used when none is configured. */
const DEFAULT_PROXY_ID = 1337;

/** The pod as istio-cni's ExtractPodInfo sees it. */
interface ProxyView {
  /** names of every container, init containers included */
  names: string[];
  /** the istio-proxy container, when there is one */
  proxy?: Container;
  /** istio-proxy's env as a map: a later entry of the same name wins, valueFrom reads as "" */
  env: Map<string, string>;
  /** the second arg when the proxy runs `proxy <type>`; "" otherwise */
  proxyType: string;
}

function proxyView(pod: Pod): ProxyView {
  // init containers first, as istio-cni lists them; a native sidecar is an init container
  const all = [...(pod.spec.initContainers ?? []), ...(pod.spec.containers ?? [])];
  const proxy = all.find((c) => c.name === CONTAINER.proxy);
  const env = new Map<string, string>();
  for (const e of proxy?.env ?? []) env.set(e.name, e.value ?? '');
  const args = proxy?.args ?? [];
  return { names: all.map((c) => c.name), proxy, env, proxyType: args.length >= 2 && args[0] === 'proxy' ? args[1] : '' };
}

export interface ProxyIdentity {
  /** sockets of this uid are the proxy's own and never captured */
  uid: number;
  gid: number;
}

export interface DnsCaptureChoice {
  capture: boolean;
  /** what decided, for `endpoint list`: the proxy's env entry or the node default */
  from: string;
}

export type SidecarSelection =
  | { selected: false; rule: string }
  | { selected: true; rule: string; proxy: ProxyIdentity; dns: DnsCaptureChoice };

export interface SidecarSelectionOptions {
  /** mesh-proxy-uid: the uid when the istio-proxy container sets none (or 0); default 1337 */
  proxyUid?: number;
  /** mesh-proxy-gid: the gid when the istio-proxy container sets none (or 0); default 1337 */
  proxyGid?: number;
  /** mesh-dns-capture: DNS capture when the proxy has no ISTIO_META_DNS_CAPTURE env; default false */
  dnsCapture?: boolean;
}

/**
 * istio-cni's checks for a pod that carries sidecar.istio.io/status (the caller's branch point:
 * without it istio-cni never redirects, and the pod may be ambient instead), in its order:
 * an istio-init container (the pod redirects itself), DISABLE_ENVOY on the proxy, no istio-proxy
 * container, a proxy that is not a sidecar (gateways run `proxy router`), and the inject opt-out.
 * Each outcome names the rule that decided it.
 */
export function selectSidecar(pod: Pod, opts: SidecarSelectionOptions = {}): SidecarSelection {
  const view = proxyView(pod);
  if (view.names.includes(CONTAINER.init)) {
    return { selected: false, rule: `container ${CONTAINER.init} present: the pod sets up its own redirection` };
  }
  const disable = view.env.get(PROXY_ENV.disableEnvoy);
  // istio-cni skips the pod only for a value strconv.ParseBool reads as true ("", "yes": not skipped)
  if (disable !== undefined && parseGoBool(disable) === true) {
    return { selected: false, rule: `${CONTAINER.proxy} env ${PROXY_ENV.disableEnvoy}=${disable}: no proxy runs` };
  }
  if (!view.proxy) {
    const have = [...new Set(view.names)].sort().join(',') || 'none';
    return { selected: false, rule: `no ${CONTAINER.proxy} container (have ${have})` };
  }
  if (view.proxyType !== '' && view.proxyType !== 'sidecar') {
    return {
      selected: false,
      rule: `${CONTAINER.proxy} is a ${view.proxyType} proxy (args: proxy ${view.proxyType}), not a sidecar`,
    };
  }
  const labels = pod.metadata.labels ?? {};
  const annotations = pod.metadata.annotations ?? {};
  const injectFrom = Object.hasOwn(labels, INJECT_KEY) ? 'label' : 'annotation';
  const inject = injectFrom === 'label' ? labels[INJECT_KEY] : annotations[INJECT_KEY];
  // "" and values ParseBool cannot read leave the pod in, as in istio-cni
  if (inject !== undefined && inject !== '' && parseGoBool(inject) === false) {
    return { selected: false, rule: `${injectFrom} ${INJECT_KEY}=${inject}` };
  }
  return {
    selected: true,
    rule: `${CONTAINER.proxy} sidecar with annotation sidecar.istio.io/status`,
    proxy: proxyIdentity(view.proxy, opts),
    dns: dnsCapture(view.env, opts.dnsCapture ?? false),
  };
}

/**
 * The proxy's uid/gid: runAsUser/runAsGroup of the istio-proxy container (OpenShift assigns
 * random ones), each unless absent or 0, as istio-cni's NewRedirect; else the node's setting.
 */
function proxyIdentity(proxy: Container, opts: SidecarSelectionOptions): ProxyIdentity {
  const ctx = proxy.securityContext ?? {};
  return {
    uid: ctx.runAsUser ? ctx.runAsUser : (opts.proxyUid ?? DEFAULT_PROXY_ID),
    gid: ctx.runAsGroup ? ctx.runAsGroup : (opts.proxyGid ?? DEFAULT_PROXY_ID),
  };
}

/**
 * DNS capture as istio-cni's NewRedirect reads it: the proxy's ISTIO_META_DNS_CAPTURE when set
 * (a value ParseBool cannot read means off, as there), else the node default (mesh-dns-capture).
 * ISTIO_META_DNS_AUTO_ALLOCATE is not read: istio-cni does not read it either; the addresses it
 * makes the proxy hand out are ordinary outbound destinations, captured as any other.
 */
function dnsCapture(env: Map<string, string>, nodeDefault: boolean): DnsCaptureChoice {
  const value = env.get(PROXY_ENV.dnsCapture);
  if (value === undefined) return { capture: nodeDefault, from: 'mesh-dns-capture' };
  return { capture: parseGoBool(value) === true, from: `${PROXY_ENV.dnsCapture}=${value}` };
}
