/* The iptables side of the benchmark: a kube-proxy-style `nat` ruleset (iptables mode) generated
 * for N services, and loading/removing it inside ONE network namespace of a simulated node.
 *
 * Shape of the ruleset (what kube-proxy's iptables mode writes for ClusterIP services):
 *
 *   OUTPUT / PREROUTING -> KUBE-SERVICES
 *   KUBE-SERVICES:  one rule per service port  `-d VIP/32 -p tcp --dport P -j KUBE-SVC-<hash>`,
 *                   then the NodePort catch-all `-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`
 *   KUBE-SVC-<hash>: `! -s <cluster cidr> -d VIP ... -j KUBE-MARK-MASQ`, then one rule per endpoint,
 *                   `-m statistic --mode random --probability 1/(n-i)` jumps, the last unconditional
 *   KUBE-SEP-<hash>: `-s <endpoint>/32 -j KUBE-MARK-MASQ` (hairpin) and `-p tcp -j DNAT --to-destination`
 *   KUBE-MARK-MASQ: `-j MARK --set-xmark 0x4000/0x4000`
 *   POSTROUTING -> KUBE-POSTROUTING: RETURN unless marked, clear the mark, MASQUERADE
 *
 * Packets meet the `nat` table only for the first packet of a connection (conntrack remembers the
 * translation), so the cost measured is per connection, and the KUBE-SERVICES walk is linear in
 * the number of services for the last service and for any destination that is not a service.
 *
 * The filter-table part of kube-proxy (REJECT for services without endpoints, KUBE-FORWARD, the
 * INVALID drop) is left out: every benchmark service has endpoints and no traffic is forwarded.
 *
 * Safety: every command runs through the SimNode with an explicit pod netns path (checked to be
 * one of the harness's `sltest-` namespaces) and outside the test cgroup. Nothing here touches the
 * machine's own network namespace.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { SimNode } from '../harness';
import { run } from '../harness';

export interface IptEndpoint {
  ip: string;
  port: number;
}

export interface IptService {
  namespace: string;
  name: string;
  portName: string;
  vip: string;
  port: number;
  endpoints: IptEndpoint[];
}

export interface Ruleset {
  text: string;
  /** rules (-A lines) in the nat table */
  rules: number;
  /** user-defined chains */
  chains: number;
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (no padding). */
function base32(buf: Buffer): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of buf) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

/** `PREFIX` + 16 base32 characters of sha256(key): unique, fixed-length chain names like kube-proxy's. */
export function chainName(prefix: 'KUBE-SVC-' | 'KUBE-SEP-', key: string): string {
  return prefix + base32(createHash('sha256').update(key).digest()).slice(0, 16);
}

function comment(text: string): string {
  return `-m comment --comment "${text.replace(/"/g, '')}"`;
}

/** Builds the `iptables-restore` input for the nat table. */
export function kubeProxyRuleset(services: IptService[], opts: { clusterCidr: string }): Ruleset {
  const chains: string[] = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];
  const rules: string[] = [
    `-A PREROUTING ${comment('kubernetes service portals')} -j KUBE-SERVICES`,
    `-A OUTPUT ${comment('kubernetes service portals')} -j KUBE-SERVICES`,
    `-A POSTROUTING ${comment('kubernetes postrouting rules')} -j KUBE-POSTROUTING`,
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    `-A KUBE-POSTROUTING ${comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE`,
  ];
  const svcRules: string[] = [];
  const chainRules: string[] = [];
  for (const s of services) {
    const spn = `${s.namespace}/${s.name}:${s.portName}`;
    const svc = chainName('KUBE-SVC-', `${spn}tcp`);
    chains.push(svc);
    svcRules.push(`-A KUBE-SERVICES -d ${s.vip}/32 -p tcp ${comment(`${spn} cluster IP`)} -m tcp --dport ${s.port} -j ${svc}`);
    chainRules.push(
      `-A ${svc} ! -s ${opts.clusterCidr} -d ${s.vip}/32 -p tcp ${comment(`${spn} cluster IP`)} -m tcp --dport ${s.port} -j KUBE-MARK-MASQ`,
    );
    const n = s.endpoints.length;
    const sepRules: string[] = [];
    s.endpoints.forEach((e, i) => {
      const ep = `${e.ip}:${e.port}`;
      const sep = chainName('KUBE-SEP-', `${spn}tcp${ep}`);
      chains.push(sep);
      const left = n - i;
      const stat = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : '';
      chainRules.push(`-A ${svc} ${comment(`${spn} -> ${ep}`)}${stat} -j ${sep}`);
      sepRules.push(`-A ${sep} -s ${e.ip}/32 ${comment(spn)} -j KUBE-MARK-MASQ`);
      sepRules.push(`-A ${sep} -p tcp ${comment(spn)} -m tcp -j DNAT --to-destination ${ep}`);
    });
    chainRules.push(...sepRules);
  }
  rules.push(...svcRules);
  rules.push(
    `-A KUBE-SERVICES ${comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
  );
  rules.push(...chainRules);
  const text = [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    ...chains.map((c) => `:${c} - [0:0]`),
    ...rules,
    'COMMIT',
    '',
  ].join('\n');
  return { text, rules: rules.length, chains: chains.length };
}

export interface IptablesInfo {
  /** e.g. "iptables v1.8.9 (nf_tables)" */
  version: string;
  variant: 'nf_tables' | 'legacy';
  /** the `nft` binary, used to delete the nat table again (nf_tables variant) */
  nft: boolean;
}

export async function iptablesInfo(): Promise<IptablesInfo> {
  const v = (await run(['iptables', '--version'])).stdout.trim();
  const nft = (await run(['nft', '--version'], { allowFail: true })).code === 0;
  return { version: v, variant: /nf_tables/.test(v) ? 'nf_tables' : 'legacy', nft };
}

function checkPodNetns(node: SimNode, netnsPath: string): void {
  // A pod of this node, never the node's own or the machine's namespace.
  if (!node.pods.some((p) => p.netnsPath === netnsPath) || !netnsPath.includes(`/${node.id}-`)) {
    throw new Error(`refusing to touch iptables outside a pod netns of ${node.id}: ${netnsPath}`);
  }
}

/** Loads the ruleset into the pod's netns with iptables-restore (replaces the nat table); returns ms taken. */
export async function loadRuleset(node: SimNode, netnsPath: string, file: string): Promise<number> {
  checkPodNetns(node, netnsPath);
  if (!fs.existsSync(file)) throw new Error(`no ruleset file ${file}`);
  const t0 = process.hrtime.bigint();
  await node.exec(['iptables-restore', '-w', '5', file], { netnsPath, inCgroup: false, timeoutMs: 180000 });
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Rules in the pod's nat table (to check a load or a removal). */
export async function countNatRules(node: SimNode, netnsPath: string): Promise<number> {
  checkPodNetns(node, netnsPath);
  const r = await node.exec(['iptables-save', '-t', 'nat'], { netnsPath, inCgroup: false, timeoutMs: 120000, allowFail: true });
  return r.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
}

/**
 * Removes the ruleset from the pod's netns. With nf_tables the whole `ip nat` table is deleted, so its
 * hooks (and the conntrack they pull in) are gone and the netns is back to its pristine state. The
 * legacy backend cannot unregister a table: it is flushed and its chains deleted, and conntrack stays
 * active in the namespace (returned as `pristine: false`).
 */
export async function removeRuleset(node: SimNode, netnsPath: string, info: IptablesInfo): Promise<{ pristine: boolean }> {
  checkPodNetns(node, netnsPath);
  const o = { netnsPath, inCgroup: false, timeoutMs: 120000 };
  if (info.variant === 'nf_tables' && info.nft) {
    const r = await node.exec(['nft', 'delete', 'table', 'ip', 'nat'], { ...o, allowFail: true });
    if (r.code !== 0 && !/No such file or directory/.test(r.stderr))
      throw new Error(`nft delete table ip nat: ${r.stderr.trim()}`);
    return { pristine: true };
  }
  await node.exec(['iptables', '-w', '5', '-t', 'nat', '-F'], o);
  await node.exec(['iptables', '-w', '5', '-t', 'nat', '-X'], o);
  return { pristine: false };
}
