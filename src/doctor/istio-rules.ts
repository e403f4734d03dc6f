/* Istio's own capture rules inside a pod sluice captures: istio-init or istio-cni ran there too,
 * and each connection is redirected twice. What Istio installs (istio/istio
 * tools/istio-iptables/pkg/constants, cni/pkg/iptables, tools/istio-nftables/pkg/constants,
 * cni/pkg/nftables): iptables chains named ISTIO_* (ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_PRERT, …;
 * istio-iptables' own leftover check matches that prefix), or, in its native nftables mode, the
 * tables istio-proxy-{nat,mangle,raw} (sidecar) and istio-ambient-{nat,mangle,raw} (ambient).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface IstioLeftover {
  /** where it was read: `nft`, `iptables-legacy`, `ip6tables-legacy`, ... */
  source: string;
  /** `ip nat`, `inet istio-proxy-nat`, or the iptables table name */
  table: string;
  chains: string[];
}

const ISTIO_CHAIN = /^ISTIO_/;
const ISTIO_NFT_TABLE = /^istio-(proxy|ambient)-/;

/** Istio's chains and tables in `nft list ruleset` output (iptables-nft rules show up here too). */
export function istioInNftRuleset(text: string): IstioLeftover[] {
  const out: IstioLeftover[] = [];
  let current: IstioLeftover | undefined;
  let istioTable = false;
  for (const line of text.split('\n')) {
    const t = /^table\s+(\S+)\s+(\S+)\s*\{/.exec(line);
    if (t) {
      current = { source: 'nft', table: `${t[1]} ${t[2]}`, chains: [] };
      istioTable = ISTIO_NFT_TABLE.test(t[2]);
      out.push(current);
      continue;
    }
    const c = /^\s+chain\s+(\S+)\s*\{/.exec(line);
    if (c && current && (istioTable || ISTIO_CHAIN.test(c[1]))) current.chains.push(c[1]);
  }
  return out.filter((l) => l.chains.length > 0);
}

/** Istio's chains in `iptables-save` output: `*table` starts a table, `:CHAIN policy [..]` declares. */
export function istioInIptablesSave(text: string, source: string): IstioLeftover[] {
  const out: IstioLeftover[] = [];
  let current: IstioLeftover | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      current = { source, table: line.slice(1).trim(), chains: [] };
      out.push(current);
    } else if (line.startsWith(':') && current) {
      const chain = line.slice(1).split(' ')[0];
      if (ISTIO_CHAIN.test(chain)) current.chains.push(chain);
    }
  }
  return out.filter((l) => l.chains.length > 0);
}

/** An executable by name, on PATH or in the sbin directories a non-root PATH may lack. */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Runs a command inside a network namespace (nsenter --net: bpffs and cgroup2 stay visible). */
export function inNetns(netnsPath: string, cmd: string[], timeoutMs = 5000): string {
  return execFileSync('nsenter', [`--net=${netnsPath}`, '--', ...cmd], {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * Reads the rules of a pod's network namespace with what the host has: `nft list ruleset` (the
 * nf_tables backend, where iptables-nft rules live too) and the legacy iptables-save tools; when
 * nft is missing, the default iptables-save.
 */
export function readIstioRules(netnsPath: string): { leftovers: IstioLeftover[]; errors: string[]; tools: string[] } {
  const leftovers: IstioLeftover[] = [];
  const errors: string[] = [];
  const tools: string[] = [];
  const nft = findTool('nft');
  const saves = nft
    ? ['iptables-legacy-save', 'ip6tables-legacy-save']
    : ['iptables-save', 'ip6tables-save', 'iptables-legacy-save', 'ip6tables-legacy-save'];
  const run = (tool: string, args: string[], parse: (text: string) => IstioLeftover[]) => {
    tools.push(path.basename(tool));
    try {
      leftovers.push(...parse(inNetns(netnsPath, [tool, ...args])));
    } catch (e) {
      errors.push(`${path.basename(tool)}: ${((e as { stderr?: string }).stderr || (e as Error).message).trim().split('\n')[0]}`);
    }
  };
  if (nft) run(nft, ['list', 'ruleset'], istioInNftRuleset);
  for (const name of saves) {
    const tool = findTool(name);
    if (tool) run(tool, [], (text) => istioInIptablesSave(text, name.replace(/-save$/, '')));
  }
  if (tools.length === 0) errors.push('neither nft nor iptables-save is installed');
  return { leftovers, errors, tools };
}

export function describeLeftovers(list: IstioLeftover[]): string {
  return list.map((l) => `${l.source} table ${l.table}: ${l.chains.join(', ')}`).join('; ');
}
