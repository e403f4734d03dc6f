/* Agent configuration: string keys in the form of a ConfigMap's `data`, the same keys a DaemonSet
 * reads from its mounted ConfigMap. Spelling follows Cilium's where a key exists there.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { isIP } from 'node:net';
import { load as loadYaml } from 'js-yaml';
import { DEFAULT_PROXY_MARK, EVENTS_RING_BYTES, MAX_DNS_SERVERS } from './bpf/constants';
import { log } from './log';

export interface Config {
  /** bpf-pin-dir: where every map and link is pinned. */
  bpfPinDir: string;
  /** cgroup-root: the cgroup the programs attach to (default: the cgroup2 mount). */
  cgroupRoot: string;
  /** k8s-objects-dir: standalone mode, a directory of Kubernetes YAML. */
  k8sObjectsDir: string;
  /** agent-socket: unix socket of the agent's local API (status, CNI). */
  agentSocket: string;
  /** bpf-lb-sock-hostns-only: socket-LB only for sockets in the agent's network namespace. */
  lbSockHostnsOnly: boolean;
  /**
   * bpf-lb-sock-terminate-pod-connections (Cilium's key): when an endpoint leaves a Service, destroy
   * the TCP sockets socket-LB connected to it as well; connected UDP sockets are destroyed always.
   */
  lbSockTerminatePodConnections: boolean;
  /** bpf-lb-service-map-max: entries of sl_lb_svc (one per service port and per backend slot). */
  lbServiceMapMax: number;
  /** bpf-lb-backend-map-max */
  lbBackendMapMax: number;
  /** bpf-lb-affinity-map-max */
  lbAffinityMapMax: number;
  /** monitor-ring-bytes: size of the ring buffer datapath events pass through (sluice monitor) */
  monitorRingBytes: number;
  /** state-dir: pod registrations and backups of edited CNI configs */
  stateDir: string;
  /** cni-conf-dir: where the runtime reads CNI configs; empty: do not install the plugin */
  cniConfDir: string;
  /** cni-bin-dir: where the runtime finds CNI plugin executables */
  cniBinDir: string;
  /** cni-exclusive: move other loadable configs aside (Cilium's behaviour); default false */
  cniExclusive: boolean;
  /** cni-conf-file-name: chain into this file; empty: the file the runtime would load */
  cniConfFileName: string;
  /** exclude-namespaces: namespaces whose pods are never captured */
  excludeNamespaces: string[];
  /**
   * mesh-proxy-uid / mesh-proxy-gid: the proxy's own sockets are never captured (Istio: 1337); per
   * pod, the istio-proxy container's runAsUser/runAsGroup win when set and non-zero
   */
  meshProxyUid: number;
  meshProxyGid: number;
  /**
   * mesh-dns-capture: send sidecar pods' DNS (UDP/TCP 53) to the proxy's 15053, as Istio's DNS
   * capture, for proxies without an ISTIO_META_DNS_CAPTURE env (which decides for its pod)
   */
  meshDnsCapture: boolean;
  /** mesh-dns-servers: resolvers whose traffic DNS capture takes; empty: every port-53 destination */
  meshDnsServers: string[];
  /** ambient-proxy-mark: "MARK/MASK" of the node proxy's sockets (Istio's ztunnel: 0x539/0xfff) */
  ambientProxyMark: { mark: number; mask: number };
  /** ambient-dns-capture: ambient pods' DNS (UDP/TCP 53) to ztunnel's 15053 (Istio >= 1.25: on) */
  ambientDnsCapture: boolean;
  /** ztunnel-uds-address: the ZDS socket ztunnel connects to (istio-cni's flag); empty: no ZDS */
  ztunnelUdsAddress: string;
  /** k8s-api-server: API server URL; with k8s-kubeconfig or in a pod, the cluster is the API */
  k8sApiServer: string;
  /** k8s-kubeconfig: kubeconfig file for the API server */
  k8sKubeconfig: string;
  /** node-name: this node: its Pods are watched, endpoints naming it are local, its Node gives the zone (default: env NODE_NAME, else the hostname) */
  nodeName: string;
  /** repair-mode: what to do with pods that started before the agent: repair, label, delete, off */
  repairMode: 'repair' | 'label' | 'delete' | 'off';
  /** the cluster source: "api" with an API server configured (or in a pod), else "standalone" */
  source: 'api' | 'standalone';
  /** log-level: debug, info, warn, error */
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** prometheus-serve-addr (Cilium's key): where /metrics is served; undefined (empty): not served */
  prometheusServeAddr?: ListenAddress;
  /** health-serve-addr: where /healthz and /readyz are served; undefined (empty): not served */
  healthServeAddr?: ListenAddress;
}

/** A TCP listening address, "host:port" as Go's net.Listen takes it: ":9967" is every address. */
export interface ListenAddress {
  /** an IP address or a host name; '' listens on every address (IPv6 and IPv4) */
  host: string;
  /** 0: any free port (tests) */
  port: number;
}

/** "host:port", "[v6]:port" or ":port" (every address), the spelling of Cilium's serve addresses. */
export function formatListenAddress(a: ListenAddress): string {
  return `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

type Parser<T> = (key: string, raw: string) => T;

const absPath: Parser<string> = (key, raw) => {
  if (!raw.startsWith('/')) throw new RangeError(`Cannot parse config key ${key} "${raw}": not an absolute path`);
  return raw.replace(/\/+$/, '') || '/';
};

const bool: Parser<boolean> = (key, raw) => {
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw new RangeError(`Cannot parse config key ${key} "${raw}": expected "true" or "false"`);
};

const fileName: Parser<string> = (key, raw) => {
  if (raw.includes('/') || raw.startsWith('.'))
    throw new RangeError(`Cannot parse config key ${key} "${raw}": expected a file name, not a path`);
  return raw;
};

/** A comma-separated list of Kubernetes names (namespaces); spaces around items are ignored. */
const nameList: Parser<string[]> = (key, raw) => {
  const items = raw
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const x of items) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(x))
      throw new RangeError(`Cannot parse config key ${key} "${raw}": "${x}" is not a namespace name`);
  }
  return items;
};

/** A comma-separated list of IP addresses, at most `max`. */
function ipList(max: number): Parser<string[]> {
  return (key, raw) => {
    const items = raw
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
    for (const x of items)
      if (!isIP(x)) throw new RangeError(`Cannot parse config key ${key} "${raw}": "${x}" is not an IP address`);
    if (items.length > max) throw new RangeError(`Cannot parse config key ${key} "${raw}": at most ${max} addresses`);
    return items;
  };
}

/** "MARK[/MASK]", each decimal or 0x-hex, as iptables writes marks; the mask defaults to all bits. */
const markMask: Parser<{ mark: number; mask: number }> = (key, raw) => {
  const m = /^(0x[0-9a-fA-F]+|\d+)(?:\/(0x[0-9a-fA-F]+|\d+))?$/.exec(raw);
  const num = (x: string) => Number(x);
  if (!m || num(m[1]) > 0xffffffff || (m[2] !== undefined && num(m[2]) > 0xffffffff)) {
    throw new RangeError(`Cannot parse config key ${key} "${raw}": expected MARK or MARK/MASK, e.g. 0x539/0xfff`);
  }
  return { mark: num(m[1]), mask: m[2] === undefined ? 0xffffffff : num(m[2]) };
};

const url: Parser<string> = (key, raw) => {
  try {
    const u = new URL(raw);
    if (u.protocol === 'https:' || u.protocol === 'http:') return raw.replace(/\/+$/, '');
  } catch {
    /* below */
  }
  throw new RangeError(`Cannot parse config key ${key} "${raw}": expected an http(s) URL`);
};

const nodeNameP: Parser<string> = (key, raw) => {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(raw))
    throw new RangeError(`Cannot parse config key ${key} "${raw}": not a node name`);
  return raw;
};

/** "host:port", "[v6]:port" or ":port"; empty: not set. */
const listenAddress: Parser<ListenAddress | undefined> = (key, raw) => {
  if (raw === '') return undefined;
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(raw);
  const host = m ? (m[1] ?? m[2]) : '';
  const bad = (why: string) => new RangeError(`Cannot parse config key ${key} "${raw}": ${why}`);
  if (!m) throw bad('expected HOST:PORT, [IPv6]:PORT or :PORT, e.g. ":9967" or "127.0.0.1:9968"');
  if (Number(m[3]) > 65535) throw bad(`port ${m[3]} is out of range (0 to 65535)`);
  if (m[1] !== undefined && isIP(host) !== 6) throw bad(`"${host}" is not an IPv6 address`);
  if (host !== '' && !isIP(host) && !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/i.test(host))
    throw bad(`"${host}" is neither an IP address nor a host name`);
  return { host, port: Number(m[3]) };
};

/** An empty value means "not set". */
function optional(p: Parser<string>): Parser<string> {
  return (key, raw) => (raw === '' ? '' : p(key, raw));
}

function intIn(min: number, max: number): Parser<number> {
  return (key, raw) => {
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      throw new RangeError(`Cannot parse config key ${key} "${raw}": expected an integer from ${min} to ${max}`);
    }
    return Number(raw);
  };
}

/** A BPF ring buffer's size: a power of two, a whole number of pages, at most 1 GiB. */
function ringBytes(key: string, raw: string): number {
  const page = 4096;
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < page || n > 1 << 30 || (n & (n - 1)) !== 0) {
    throw new RangeError(
      `Cannot parse config key ${key} "${raw}": expected a power of two from ${page} (one page) to ${1 << 30} bytes`,
    );
  }
  return n;
}

function oneOf<T extends string>(...values: T[]): Parser<T> {
  return (key, raw) => {
    if (!(values as string[]).includes(raw)) {
      throw new RangeError(`Cannot parse config key ${key} "${raw}": expected one of ${values.join(', ')}`);
    }
    return raw as T;
  };
}

/** The cgroup2 mount point, from /proc/mounts. */
export function cgroup2Mount(mounts = fs.readFileSync('/proc/mounts', 'utf8')): string {
  for (const line of mounts.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2') return mnt;
  }
  throw new Error('Cannot find a cgroup2 mount in /proc/mounts: set cgroup-root');
}

interface KeySpec<K extends keyof Config> {
  field: K;
  parse: Parser<Config[K]>;
  default: () => string;
}

/** A key's spec for whichever field it fills: each entry's parser must produce that field's type. */
type AnyKeySpec = { [K in keyof Config]-?: KeySpec<K> }[keyof Config];

const keys: { [name: string]: AnyKeySpec } = {
  'bpf-pin-dir': { field: 'bpfPinDir', parse: absPath, default: () => '/sys/fs/bpf/sluice' },
  'cgroup-root': { field: 'cgroupRoot', parse: absPath, default: () => cgroup2Mount() },
  'k8s-objects-dir': { field: 'k8sObjectsDir', parse: absPath, default: () => '/etc/sluice/objects' },
  'agent-socket': { field: 'agentSocket', parse: absPath, default: () => '/var/run/sluice/agent.sock' },
  'bpf-lb-sock-hostns-only': { field: 'lbSockHostnsOnly', parse: bool, default: () => 'false' },
  'bpf-lb-sock-terminate-pod-connections': { field: 'lbSockTerminatePodConnections', parse: bool, default: () => 'false' },
  'bpf-lb-service-map-max': { field: 'lbServiceMapMax', parse: intIn(16, 16 << 20), default: () => '1048576' },
  'bpf-lb-backend-map-max': { field: 'lbBackendMapMax', parse: intIn(16, 16 << 20), default: () => '524288' },
  'bpf-lb-affinity-map-max': { field: 'lbAffinityMapMax', parse: intIn(16, 16 << 20), default: () => '65536' },
  'monitor-ring-bytes': { field: 'monitorRingBytes', parse: ringBytes, default: () => String(EVENTS_RING_BYTES) },
  'state-dir': { field: 'stateDir', parse: absPath, default: () => '/var/run/sluice' },
  'cni-conf-dir': { field: 'cniConfDir', parse: optional(absPath), default: () => '' },
  'cni-bin-dir': { field: 'cniBinDir', parse: absPath, default: () => '/opt/cni/bin' },
  'cni-exclusive': { field: 'cniExclusive', parse: bool, default: () => 'false' },
  'cni-conf-file-name': { field: 'cniConfFileName', parse: optional(fileName), default: () => '' },
  'exclude-namespaces': { field: 'excludeNamespaces', parse: nameList, default: () => 'kube-system,istio-system' },
  'mesh-proxy-uid': { field: 'meshProxyUid', parse: intIn(0, 4294967294), default: () => '1337' },
  'mesh-proxy-gid': { field: 'meshProxyGid', parse: intIn(0, 4294967294), default: () => '1337' },
  'mesh-dns-capture': { field: 'meshDnsCapture', parse: bool, default: () => 'false' },
  'mesh-dns-servers': { field: 'meshDnsServers', parse: ipList(MAX_DNS_SERVERS), default: () => '' },
  'ambient-proxy-mark': {
    field: 'ambientProxyMark',
    parse: markMask,
    default: () => `0x${DEFAULT_PROXY_MARK.mark.toString(16)}/0x${DEFAULT_PROXY_MARK.mask.toString(16)}`,
  },
  'ambient-dns-capture': { field: 'ambientDnsCapture', parse: bool, default: () => 'true' },
  'ztunnel-uds-address': { field: 'ztunnelUdsAddress', parse: optional(absPath), default: () => '/var/run/ztunnel/ztunnel.sock' },
  'k8s-api-server': { field: 'k8sApiServer', parse: optional(url), default: () => '' },
  'k8s-kubeconfig': { field: 'k8sKubeconfig', parse: optional(absPath), default: () => '' },
  'node-name': {
    field: 'nodeName',
    parse: optional(nodeNameP),
    default: () => (process.env.NODE_NAME ?? os.hostname()).toLowerCase(),
  },
  'repair-mode': { field: 'repairMode', parse: oneOf('repair', 'label', 'delete', 'off'), default: () => 'repair' },
  'log-level': { field: 'logLevel', parse: oneOf('debug', 'info', 'warn', 'error'), default: () => 'info' },
  'prometheus-serve-addr': { field: 'prometheusServeAddr', parse: listenAddress, default: () => '' },
  'health-serve-addr': { field: 'healthServeAddr', parse: listenAddress, default: () => '127.0.0.1:9968' },
};

export const CONFIG_KEYS = Object.keys(keys);

/**
 * Builds a Config from key/value data. Unknown keys are warned about and ignored; a malformed
 * value throws a RangeError naming the key and the value.
 */
export function parseConfig(data: Record<string, unknown>): Config {
  const out: Partial<Config> = {};
  for (const name of Object.keys(data)) {
    if (!(name in keys)) log.warn('unknown config key ignored', { key: name });
  }
  for (const [name, spec] of Object.entries(keys)) {
    const v = data[name];
    let raw: string;
    if (v === undefined || v === null) raw = spec.default();
    else if (typeof v === 'string') raw = v.trim();
    else if (typeof v === 'boolean' || typeof v === 'number')
      raw = String(v); // unquoted YAML scalars
    else throw new TypeError(`Cannot parse config key ${name}: expected a string, got ${Array.isArray(v) ? 'a list' : typeof v}`);
    (out as Record<string, unknown>)[spec.field] = spec.parse(name, raw);
  }
  // Standalone (a directory of YAML) stays the default; an API server configured, or running in
  // a pod without an objects dir, makes the cluster the API server.
  const inPod = process.env.KUBERNETES_SERVICE_HOST !== undefined && data['k8s-objects-dir'] === undefined;
  out.source = out.k8sApiServer || out.k8sKubeconfig || inPod ? 'api' : 'standalone';
  if (!out.nodeName) out.nodeName = os.hostname();
  return out as Config;
}

/**
 * Reads a mounted ConfigMap: one file per key, as kubelet projects it (hidden entries such as
 * `..data` are kubelet's bookkeeping). The form a DaemonSet uses, so that
 * `kubectl get cm sluice-config -o yaml | grep <key>` shows what the agent reads.
 */
export function loadConfigDir(dir: string): Config {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => !n.startsWith('.'));
  } catch (e) {
    throw new Error(`Cannot read config directory ${dir}: ${(e as Error).message}`);
  }
  const data: Record<string, string> = {};
  for (const n of names) {
    const file = `${dir}/${n}`;
    if (fs.statSync(file).isFile()) data[n] = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  }
  return parseConfig(data);
}

/** Reads a config file: a YAML map of keys, or a whole ConfigMap manifest (its `data`). */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`Cannot read config file ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = loadYaml(text);
  } catch (e) {
    throw new SyntaxError(`Cannot parse config file ${file}: ${(e as Error).message}`);
  }
  if (doc === undefined || doc === null) doc = {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new TypeError(`Cannot parse config file ${file}: expected a map of keys`);
  }
  const obj = doc as Record<string, unknown>;
  const data = obj.kind === 'ConfigMap' ? ((obj.data as Record<string, unknown>) ?? {}) : obj;
  return parseConfig(data);
}
