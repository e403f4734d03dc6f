/* The probes of the golden-driven equivalence suite, and how an outcome is written so that the
 * sluice pod S and the reference pod I compare equal when they behave alike.
 *
 * Every case runs the same matrix, with the ports its annotations name added, for each address
 * family its golden has rules for:
 *  - outbound TCP as the app, as the proxy's uid alone and as the proxy's gid alone: to another pod
 *    (a served port, 15020, 53 and the case's ports), to an address outside the pod range, to a
 *    Service VIP, to the pod's own IP (served, unserved, 53, the sidecar's ports and the case's ports),
 *    to 127.0.0.1 (served and port 53), another 127/8 address and ::1; from 127.0.0.6 / ::6 to
 *    the pod's own IP (Envoy's inbound hand-off);
 *  - DNS over UDP (unconnected and connected sockets) to another pod's port 53 and to a resolver
 *    on 127.0.0.53 in the pod (TCP too), as all three;
 *  - inbound TCP from another pod to a served port, an unserved one, the sidecar's ports (15000,
 *    15001, 15006, 15008, 15020, 15021, 15090) and the case's ports.
 * Destinations are symbols (self, be1, far, VIP, ...) so the two pods' addresses compare equal.
 *
 * An outcome is one of:
 *   "<via> <orig> > <next>"  the connection reached the stand-in sidecar on listener <via> (out,
 *                            in, or an extra port such as 15053), which read <orig> as the original
 *                            destination and forwarded to it; <next> is who answered there (app,
 *                            be1, sidecar(<via>)) or ERR:<errno>;
 *   "direct <who>"           a server answered without the proxy;
 *   "answered <who> from <peer>"  a UDP reply, and the address it came from;
 *   "fail <errno>"           the connection or query failed.
 * The accepted socket's local address is not compared: under REDIRECT it is the proxy's port,
 * while sluice keeps the original destination there (by design). For a VIP only "captured
 * (<via> <orig>)" or "not captured" is compared: the reference pod has no socket-LB (it runs
 * outside the test cgroup), so what a VIP reaches differs by construction.
 */
import { TCP_PORT, type ProbeResult } from './lb-env';
import { sidecarReply } from './mesh-env';

export type Family = 4 | 6;
/** app: the pod's application; uid / gid: the proxy's uid alone, its gid alone; client: another pod (inbound) */
export type Identity = 'app' | 'uid' | 'gid' | 'client';
export type Proto = 'tcp' | 'udp' | 'udpc';

export interface Probe {
  /** unique within a case, e.g. "uid 1337 → self:15006", "client → [self6]:8080" */
  name: string;
  family: Family;
  as: Identity;
  proto: Proto;
  /** a symbol (self, be1, far, VIP, ...) or a loopback literal */
  to: string;
  port: number;
  /** 127.0.0.6 / ::6: bind the client socket first (Envoy's inbound passthrough source) */
  bind?: string;
}

/** The app's servers: TCP_PORT on the pod IPs, LOCAL_PORT on 127.0.0.1 and ::1. */
export const LOCAL_PORT = 9099;
/** An address outside every pod range (and outside 10.0.0.0/8), served by a backend pod. */
export const FAR_V4 = '192.0.2.10';
export const VIP = '10.96.0.10';
export const VIP6 = 'fd00:96::10';
export const DNS_PORT = 53;
/** A resolver on loopback inside the pod (the DNS server Istio's goldens name, systemd-resolved's stub address) */
export const LOCAL_RESOLVER = '127.0.0.53';
/** Istio's proxy DNS port (the stand-in sidecar's extra TCP port, a UDP server as the proxy) */
export const PROXY_DNS_PORT = 15053;

/** Another pod's ports: a served one, istio-cni's default excluded outbound port, DNS over TCP. */
const REMOTE_PORTS = [TCP_PORT, 15020, DNS_PORT];
/** The pod's own ports: served, unserved, DNS over TCP, and the sidecar's own ports. */
const SELF_PORTS = [TCP_PORT, 9090, DNS_PORT, 15001, 15006, 15008, 15020, 15021, 15090];
/** Inbound: served, unserved, and the sidecar's own ports. */
const INBOUND_PORTS = [TCP_PORT, 9090, 15000, 15001, 15006, 15008, 15020, 15021, 15090];

const PORT_ANNOTATIONS = ['includeInboundPorts', 'excludeInboundPorts', 'includeOutboundPorts', 'excludeOutboundPorts'].map(
  (k) => `traffic.sidecar.istio.io/${k}`,
);

/** The ports a case's annotations name (each is probed outbound, on the pod itself and inbound). */
export function annotatedPorts(annotations: Record<string, string>): number[] {
  const out = new Set<number>();
  for (const k of PORT_ANNOTATIONS) {
    for (const item of (annotations[k] ?? '').split(',')) {
      const s = item.trim();
      if (/^\d+$/.test(s)) out.add(Number(s));
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** The IPv6 symbols (written in brackets with a port, as sl-probe writes IPv6 addresses). */
const V6_SYMBOLS = new Set(['self6', 'be16', 'be26', 'client6', 'VIP6']);

function show(sym: string, port: number): string {
  return V6_SYMBOLS.has(sym) || sym.includes(':') ? `[${sym}]:${port}` : `${sym}:${port}`;
}

function label(as: Identity, ids: { uid: number; gid: number }): string {
  if (as === 'uid') return `uid ${ids.uid}`;
  if (as === 'gid') return `gid ${ids.gid}`;
  return as;
}

/** The probes of one case. `ids`: the proxy's uid and gid (what the golden's owner rules name). */
export function probeMatrix(o: {
  families: Family[];
  annotations: Record<string, string>;
  proxy: { uid: number; gid: number };
}): Probe[] {
  const extra = annotatedPorts(o.annotations);
  const uniq = (xs: number[]) => [...new Set(xs)].sort((a, b) => a - b);
  const probes: Probe[] = [];
  const add = (p: Omit<Probe, 'name'>) => {
    const who = label(p.as, o.proxy);
    const proto = p.proto === 'tcp' ? '' : p.proto === 'udp' ? ' udp' : ' udp (connected)';
    const from = p.bind ? ` from ${p.bind}` : '';
    probes.push({ ...p, name: `${who}${proto}${from} → ${show(p.to, p.port)}` });
  };
  for (const family of o.families) {
    const v6 = family === 6;
    const self = v6 ? 'self6' : 'self';
    const be1 = v6 ? 'be16' : 'be1';
    const lo = v6 ? '::1' : '127.0.0.1';
    for (const as of ['app', 'uid', 'gid'] as const) {
      for (const port of uniq([...REMOTE_PORTS, ...extra])) add({ family, as, proto: 'tcp', to: be1, port });
      if (!v6) add({ family, as, proto: 'tcp', to: 'far', port: TCP_PORT });
      add({ family, as, proto: 'tcp', to: v6 ? 'VIP6' : 'VIP', port: 80 });
      for (const port of uniq([...SELF_PORTS, ...extra])) add({ family, as, proto: 'tcp', to: self, port });
      add({ family, as, proto: 'tcp', to: lo, port: LOCAL_PORT });
      add({ family, as, proto: 'tcp', to: lo, port: DNS_PORT });
      if (!v6) {
        add({ family, as, proto: 'tcp', to: '127.0.0.2', port: LOCAL_PORT });
        for (const proto of ['tcp', 'udp', 'udpc'] as const) add({ family, as, proto, to: LOCAL_RESOLVER, port: DNS_PORT });
      }
      add({ family, as, proto: 'tcp', to: self, port: TCP_PORT, bind: v6 ? '::6' : '127.0.0.6' });
      add({ family, as, proto: 'udp', to: be1, port: DNS_PORT });
      add({ family, as, proto: 'udpc', to: be1, port: DNS_PORT });
    }
    for (const port of uniq([...INBOUND_PORTS, ...extra])) add({ family, as: 'client', proto: 'tcp', to: self, port });
  }
  const names = new Set(probes.map((p) => p.name));
  if (names.size !== probes.length) throw new Error('probeMatrix: two probes share a name');
  return probes;
}

/** Addresses of one side, by symbol: the pod's own and its peers'. */
export type Symbols = Map<string, string>;

function hostOf(a: string): string {
  return a.startsWith('[') ? a.slice(1, a.indexOf(']')) : a.slice(0, a.lastIndexOf(':'));
}

/** "10.1.2.3:8080" -> "be1:8080", "[fd00::3]:80" -> "[be16]:80"; unknown addresses stay. */
export function symAddr(symbols: Symbols, a: string): string {
  const host = hostOf(a);
  for (const [sym, addr] of symbols) if (addr === host) return a.replace(host, sym);
  return a;
}

/** Who answered: `app`, `dns-proxy` and `local-resolver` for the pod's own servers, else the server id. */
export function who(podName: string, id: string | undefined): string {
  if (id === undefined) return '?';
  if (id === `app-${podName}`) return 'app';
  if (id === `dns-${podName}`) return 'dns-proxy';
  if (id === `resolver-${podName}`) return 'local-resolver';
  return id;
}

/** The outcome of one probe, written as the header explains. */
export function outcome(p: Probe, r: ProbeResult | undefined, side: { pod: string; symbols: Symbols }): string {
  if (!r) return 'no result';
  if (!r.ok) return `fail ${r.errno ?? r.stage ?? '?'}`;
  if (p.proto !== 'tcp') return `answered ${who(side.pod, r.reply?.split(' ')[0])} from ${symAddr(side.symbols, r.peer ?? '?')}`;
  const sc = sidecarReply(r.reply);
  if (!sc) return `direct ${who(side.pod, r.reply?.split(' ')[0])}`;
  const head = `${sc.via} ${symAddr(side.symbols, sc.orig)}`;
  if (sc.upstream === undefined) return head;
  let next: string;
  if (sc.upstream.startsWith('ERR:')) next = sc.upstream.split(':').slice(0, 2).join(':');
  else if (sc.upstream.startsWith('sidecar ')) next = `sidecar(${sidecarReply(sc.upstream)?.via})`;
  else next = who(side.pod, sc.upstream.split(' ')[0]);
  return `${head} > ${next}`;
}

/** What is compared: the whole outcome; for a VIP, only whether (and how) it was captured. */
export function comparable(p: Probe, o: string): string {
  if (!p.to.startsWith('VIP')) return o;
  return /^(out|in|\d+) /.test(o) ? `captured (${o.split(' > ')[0]})` : 'not captured';
}
