/* Istio's sidecar capture rules (what istio-init / istio-cni run through istio-iptables in REDIRECT
 * mode), generated from the pod's traffic annotations, and loading them into ONE pod netns of a
 * simulated node. The reference the equivalence suite and the capture benchmark compare sluice to.
 *
 * Shape (iptables-restore input, the `nat` table; ip6tables gets the same with ::6/128 and ::1/128
 * for 127.0.0.6/32 and 127.0.0.1/32, and only the IPv6 ranges):
 *
 *   * nat
 *   -N ISTIO_INBOUND / ISTIO_REDIRECT / ISTIO_IN_REDIRECT / ISTIO_OUTPUT
 *   -A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN                        (HBONE tunnel port)
 *   -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
 *   -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
 *   -A PREROUTING -p tcp -j ISTIO_INBOUND                                  (unless includeInboundPorts "")
 *     includeInboundPorts "*":  one `--dport P -j RETURN` per excluded inbound port, then
 *                               `-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT`
 *     a list:                   one `--dport P -j ISTIO_IN_REDIRECT` per port; the excluded
 *                               inbound ports are NOT applied in this form (istio-iptables applies
 *                               them only in the "*" branch of handleInboundPortsInclude)
 *   -A OUTPUT -p tcp -j ISTIO_OUTPUT
 *     excludeOutboundPorts:     `-p tcp -m multiport --dports P1,P2 -j RETURN` (15 ports a rule)
 *   -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN                        (inbound passthrough)
 *   -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner U -j ISTIO_IN_REDIRECT
 *   -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner U -j RETURN                (omitted when an include range is loopback)
 *   -A ISTIO_OUTPUT -m owner --uid-owner U -j RETURN
 *   (the same three for --gid-owner G)
 *   -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
 *     excludeOutboundIPRanges:  `-d CIDR -j RETURN` per range
 *     includeOutboundPorts:     `-p tcp --dport P -j ISTIO_REDIRECT` per port
 *     includeOutboundIPRanges "*": `-j ISTIO_REDIRECT`; a list: `-d CIDR -j ISTIO_REDIRECT` per
 *                               range then `-j RETURN`; "" (or no range of this family): nothing
 *   COMMIT
 *
 * Two points follow istio-iptables itself (tools/istio-iptables/pkg/capture/run.go) rather than a
 * shorter summary of it: the excluded outbound ranges come BEFORE the included outbound ports
 * ("Apply outbound IPv4 exclusions. Must be applied before inclusions." precedes
 * handleOutboundPortsInclude), and excludeInboundPorts only applies with includeInboundPorts "*".
 * The injector always adds its own ports 15090,15021,15020 to excludeInboundPorts.
 *
 * Safety: every command runs through the SimNode in a pod netns of that node (checked), outside
 * the test cgroup; nothing touches the machine's own namespace. The node's destroy() removes the
 * namespace and with it the rules.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isIP } from 'node:net';
import type { SimNode, SimPod } from '../harness';

export type PortList = string | Array<number | string>;

export interface IstioCaptureOpts {
  proxyUid?: number;
  proxyGid?: number;
  /** Envoy's outbound (15001) and inbound (15006) capture ports, and the HBONE port (15008) */
  outboundPort?: number;
  inboundPort?: number;
  tunnelPort?: number;
  /** traffic.sidecar.istio.io/includeOutboundIPRanges: "*" (default), "" or a CIDR list */
  includeOutboundIPRanges?: PortList;
  excludeOutboundIPRanges?: PortList;
  includeOutboundPorts?: PortList;
  excludeOutboundPorts?: PortList;
  /** traffic.sidecar.istio.io/includeInboundPorts: "*" (default), "" or a port list */
  includeInboundPorts?: PortList;
  /** added to the injector's own 15090,15021,15020 */
  excludeInboundPorts?: PortList;
  /** the injector's always-excluded inbound ports (default 15090,15021,15020) */
  injectorExcludeInboundPorts?: number[];
}

/** The injector's excluded inbound ports: Prometheus merge (15090), health (15021), status (15020). */
export const INJECTOR_EXCLUDE_INBOUND = [15090, 15021, 15020];

/** The traffic annotations that mean these options (what a meshed pod of the same config carries). */
export function istioAnnotations(o: IstioCaptureOpts): Record<string, string> {
  const T = 'traffic.sidecar.istio.io/';
  const out: Record<string, string> = {};
  const put = (k: string, v: PortList | undefined) => {
    if (v !== undefined) out[T + k] = typeof v === 'string' ? v : v.join(',');
  };
  put('includeOutboundIPRanges', o.includeOutboundIPRanges);
  put('excludeOutboundIPRanges', o.excludeOutboundIPRanges);
  put('includeOutboundPorts', o.includeOutboundPorts);
  put('excludeOutboundPorts', o.excludeOutboundPorts);
  put('includeInboundPorts', o.includeInboundPorts);
  put('excludeInboundPorts', o.excludeInboundPorts);
  return out;
}

function items(v: PortList | undefined): string[] {
  if (v === undefined) return [];
  const list = typeof v === 'string' ? v.split(',') : v.map(String);
  return list.map((s) => s.trim()).filter((s) => s !== '');
}

function ports(name: string, v: PortList | undefined): number[] {
  const out: number[] = [];
  for (const s of items(v)) {
    const n = Number(s);
    if (!/^\d+$/.test(s) || n < 1 || n > 65535) throw new RangeError(`${name}: "${s}" is not a port`);
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

interface Ranges {
  wildcard: boolean;
  v4: string[];
  v6: string[];
}

function ranges(name: string, v: PortList | undefined): Ranges {
  const list = items(v);
  if (list.length === 1 && list[0] === '*') return { wildcard: true, v4: [], v6: [] };
  const r: Ranges = { wildcard: false, v4: [], v6: [] };
  for (const s of list) {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
    const fam = m ? isIP(m[1]) : 0;
    if (!m || fam === 0 || Number(m[2]) > (fam === 4 ? 32 : 128)) throw new RangeError(`${name}: "${s}" is not a CIDR`);
    (fam === 4 ? r.v4 : r.v6).push(`${m[1].toLowerCase()}/${m[2]}`);
  }
  return r;
}

function isLoopbackCidr(c: string): boolean {
  const ip = c.split('/')[0];
  return ip.includes(':') ? ip === '::1' : ip.startsWith('127.');
}

/** The nat-table rules Istio's istio-iptables writes for these options, for iptables-restore. */
export function istioRules(o: IstioCaptureOpts = {}): { v4: string; v6: string } {
  const uid = o.proxyUid ?? 1337;
  const gid = o.proxyGid ?? 1337;
  const outPort = o.outboundPort ?? 15001;
  const inPort = o.inboundPort ?? 15006;
  const tunnel = o.tunnelPort ?? 15008;
  const incIn = typeof o.includeInboundPorts === 'string' ? o.includeInboundPorts.trim() : o.includeInboundPorts ?? '*';
  const inAll = incIn === '*';
  const inPorts = inAll ? [] : ports('includeInboundPorts', incIn);
  const exIn = [...(o.injectorExcludeInboundPorts ?? INJECTOR_EXCLUDE_INBOUND), ...ports('excludeInboundPorts', o.excludeInboundPorts)].filter(
    (p, i, a) => a.indexOf(p) === i,
  );
  const exOutPorts = ports('excludeOutboundPorts', o.excludeOutboundPorts);
  const incOutPorts = ports('includeOutboundPorts', o.includeOutboundPorts);
  const inc = ranges('includeOutboundIPRanges', o.includeOutboundIPRanges ?? '*');
  const exc = ranges('excludeOutboundIPRanges', o.excludeOutboundIPRanges);
  if (exc.wildcard) throw new RangeError('excludeOutboundIPRanges: "*" is not accepted by istio-iptables');
  const loopbackIncluded = [...inc.v4, ...inc.v6].some(isLoopbackCidr);

  const build = (fam: 4 | 6): string => {
    const passthrough = fam === 4 ? '127.0.0.6/32' : '::6/128';
    const localhost = fam === 4 ? '127.0.0.1/32' : '::1/128';
    const incRanges = fam === 4 ? inc.v4 : inc.v6;
    const excRanges = fam === 4 ? exc.v4 : exc.v6;
    const L: string[] = ['* nat', '-N ISTIO_INBOUND', '-N ISTIO_REDIRECT', '-N ISTIO_IN_REDIRECT', '-N ISTIO_OUTPUT'];
    L.push(`-A ISTIO_INBOUND -p tcp --dport ${tunnel} -j RETURN`);
    L.push(`-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports ${outPort}`);
    L.push(`-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports ${inPort}`);
    if (inAll || inPorts.length) {
      L.push('-A PREROUTING -p tcp -j ISTIO_INBOUND');
      if (inAll) {
        for (const p of exIn) L.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j RETURN`);
        L.push('-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT');
      } else {
        for (const p of inPorts) L.push(`-A ISTIO_INBOUND -p tcp --dport ${p} -j ISTIO_IN_REDIRECT`);
      }
    }
    L.push('-A OUTPUT -p tcp -j ISTIO_OUTPUT');
    for (let i = 0; i < exOutPorts.length; i += 15) {
      L.push(`-A ISTIO_OUTPUT -p tcp -m multiport --dports ${exOutPorts.slice(i, i + 15).join(',')} -j RETURN`);
    }
    L.push(`-A ISTIO_OUTPUT -o lo -s ${passthrough} -j RETURN`);
    for (const [kind, id] of [['uid', uid], ['gid', gid]] as const) {
      L.push(`-A ISTIO_OUTPUT -o lo ! -d ${localhost} -p tcp ! --dport ${tunnel} -m owner --${kind}-owner ${id} -j ISTIO_IN_REDIRECT`);
      if (!loopbackIncluded) L.push(`-A ISTIO_OUTPUT -o lo -m owner ! --${kind}-owner ${id} -j RETURN`);
      L.push(`-A ISTIO_OUTPUT -m owner --${kind}-owner ${id} -j RETURN`);
    }
    L.push(`-A ISTIO_OUTPUT -d ${localhost} -j RETURN`);
    for (const c of excRanges) L.push(`-A ISTIO_OUTPUT -d ${c} -j RETURN`);
    for (const p of incOutPorts) L.push(`-A ISTIO_OUTPUT -p tcp --dport ${p} -j ISTIO_REDIRECT`);
    if (inc.wildcard) {
      L.push('-A ISTIO_OUTPUT -j ISTIO_REDIRECT');
    } else if (incRanges.length) {
      for (const c of incRanges) L.push(`-A ISTIO_OUTPUT -d ${c} -j ISTIO_REDIRECT`);
      L.push('-A ISTIO_OUTPUT -j RETURN');
    }
    L.push('COMMIT', '');
    return L.join('\n');
  };
  return { v4: build(4), v6: build(6) };
}

function checkPod(node: SimNode, pod: SimPod): void {
  // A pod of this node, never the node's own or the machine's namespace.
  if (!node.pods.includes(pod) || !pod.netnsPath.includes(`/${node.id}-`) || pod.netnsPath === node.netnsPath) {
    throw new Error(`refusing to touch iptables outside a pod netns of ${node.id}: ${pod.netnsPath}`);
  }
}

/** `-A` rules per chain of an iptables-restore text or of `iptables -t nat -S` output. */
export function rulesPerChain(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of text.split('\n')) {
    const a = /^-A (\S+) /.exec(l);
    if (a) m.set(a[1], (m.get(a[1]) ?? 0) + 1);
  }
  return m;
}

/**
 * Loads Istio's rules for these options into the pod's netns (iptables-restore and
 * ip6tables-restore, replacing the nat tables, so calling it again switches the options), adds
 * ::6/128 on lo as istio-iptables does for IPv6, and checks with `iptables -t nat -S` that every
 * generated rule is in place. Returns the generated rules and what the kernel lists.
 */
export async function applyIstioRules(node: SimNode, pod: SimPod, opts: IstioCaptureOpts = {}): Promise<{ v4: string; v6: string; listed4: string; listed6: string }> {
  checkPod(node, pod);
  const rules = istioRules(opts);
  const o = { netnsPath: pod.netnsPath, inCgroup: false, timeoutMs: 20000 };
  const dir = path.join(node.workDir, 'istio-iptables');
  fs.mkdirSync(dir, { recursive: true });
  const listed: Record<4 | 6, string> = { 4: '', 6: '' };
  for (const fam of [4, 6] as const) {
    const file = path.join(dir, `${pod.name}.v${fam}.rules`);
    fs.writeFileSync(file, fam === 4 ? rules.v4 : rules.v6);
    const tool = fam === 4 ? 'iptables' : 'ip6tables';
    await node.exec([`${tool}-restore`, '-w', '5', file], o);
    listed[fam] = (await node.exec([tool, '-w', '5', '-t', 'nat', '-S'], o)).stdout;
    const want = rulesPerChain(fam === 4 ? rules.v4 : rules.v6);
    const have = rulesPerChain(listed[fam]);
    for (const chain of new Set([...want.keys(), ...have.keys()])) {
      if ((want.get(chain) ?? 0) !== (have.get(chain) ?? 0)) {
        throw new Error(`${tool} in ${pod.name}: chain ${chain} has ${have.get(chain) ?? 0} rules, generated ${want.get(chain) ?? 0}:\n${listed[fam]}`);
      }
    }
  }
  const lo = (await node.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', 'lo'], o)).stdout;
  if (!/\sinet6 ::6\/128\s/.test(lo)) await node.exec(['ip', '-6', 'addr', 'add', '::6/128', 'dev', 'lo', 'nodad'], o);
  return { ...rules, listed4: listed[4], listed6: listed[6] };
}
