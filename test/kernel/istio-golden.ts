/* Istio's golden files as iptables-restore input, and loading them into ONE pod netns of a
 * simulated node: the reference pod of the golden-driven equivalence suite and of the capture
 * benchmark.
 *
 * Two upstream formats (see test/istio-golden/README.md):
 *  - istio-cni (`cni/pkg/plugin/testdata/*.txt.golden`): `* table` ... `COMMIT` blocks, IPv4 only;
 *  - istio-iptables (`tools/istio-iptables/pkg/capture/testdata/*.golden`): every command its stub
 *    recorded: `iptables-save`/`ip6tables-save` calls around the IPv4 iptables-restore input,
 *    followed by the IPv6 input when IPv6 is enabled (then the run ends with `ip6tables-save`).
 *    Each restore input holds a table at most once, so the first table seen a second time starts
 *    the IPv6 input.
 * Files of test/istio-derived/ use the istio-iptables format and may hold `#` comments.
 *
 * The rules are loaded as they are: no rule is rewritten. Loading replaces the pod's nat, mangle,
 * raw and filter tables (iptables-restore without --noflush flushes and deletes the chains of the
 * tables it is given, so every table the golden lacks is given empty), then checks with
 * `iptables -S` that every chain holds as many rules as the golden gave it.
 *
 * Safety: every command runs through the SimNode in a pod netns of that node (checked), outside
 * the test cgroup; nothing touches the machine's own namespace. The node's destroy() removes the
 * namespace and with it the rules.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SimNode, SimPod } from '../harness';
import { ROOT } from './lb-env';

/** The tables loading replaces (every table a golden uses, and filter). */
export const TABLES = ['nat', 'mangle', 'raw', 'filter'] as const;

export interface RestoreTable {
  name: string;
  /** the lines between `* name` and `COMMIT`: -N, -A, -I (and :CHAIN policy lines) */
  lines: string[];
}

export interface GoldenRules {
  /** the file, relative to the repository root */
  file: string;
  v4: RestoreTable[];
  /** present when the golden has IPv6 rules */
  v6?: RestoreTable[];
}

const COMMAND_LINES = new Set(['iptables-save', 'ip6tables-save']);
const IPV4_CIDR = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\/\d{1,2}$/;
const IPV6_CIDR = /^[0-9a-f]*:[0-9a-f:.]*\/\d{1,3}$/i;

/** Splits a golden's text into its IPv4 and IPv6 iptables-restore inputs. */
export function parseGolden(text: string, file: string): GoldenRules {
  const blocks: RestoreTable[] = [];
  const commands: string[] = [];
  let open: RestoreTable | undefined;
  let sawCommandFirst = false;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    const where = `${file}:${i + 1}`;
    if (line === '' || line.startsWith('#')) return;
    if (open) {
      if (line === 'COMMIT') {
        blocks.push(open);
        open = undefined;
      } else if (/^(-[NAI] |:)/.test(line)) {
        open.lines.push(line);
      } else {
        throw new SyntaxError(`${where}: "${line}" is not an iptables-restore rule line (in table ${open.name})`);
      }
      return;
    }
    const table = /^\*\s*(\S+)$/.exec(line);
    if (table) {
      open = { name: table[1], lines: [] };
    } else if (COMMAND_LINES.has(line)) {
      if (blocks.length === 0) sawCommandFirst = true;
      commands.push(line);
    } else {
      throw new SyntaxError(`${where}: "${line}" is neither a table block nor a recorded iptables-save call`);
    }
  });
  if (open) throw new SyntaxError(`${file}: table ${open.name} has no COMMIT`);
  if (blocks.length === 0) throw new SyntaxError(`${file}: no table block`);

  const seen = new Set<string>();
  let split = blocks.length;
  for (let i = 0; i < blocks.length; i++) {
    if (seen.has(blocks[i].name)) {
      split = i;
      break;
    }
    seen.add(blocks[i].name);
  }
  const v4 = blocks.slice(0, split);
  const v6 = split < blocks.length ? blocks.slice(split) : undefined;
  if (v6 && new Set(v6.map((b) => b.name)).size !== v6.length) {
    throw new SyntaxError(
      `${file}: a table appears three times (${blocks.map((b) => b.name).join(', ')}); expected one IPv4 and one IPv6 restore input`,
    );
  }
  // istio-iptables ends an IPv6-enabled run with ip6tables-save (run.go's deferred final state)
  const ipv6Run = sawCommandFirst && commands[commands.length - 1] === 'ip6tables-save';
  if (sawCommandFirst && ipv6Run !== (v6 !== undefined)) {
    throw new SyntaxError(
      `${file}: the recorded calls say IPv6 ${ipv6Run ? 'enabled' : 'disabled'}, but the file has ${v6 ? 'an' : 'no'} IPv6 restore input`,
    );
  }
  for (const [fam, tables] of [
    [4, v4],
    [6, v6 ?? []],
  ] as const) {
    for (const t of tables) {
      for (const l of t.lines) {
        const wrong = l.split(/\s+/).find((tok) => (fam === 4 ? IPV6_CIDR : IPV4_CIDR).test(tok));
        if (wrong)
          throw new SyntaxError(`${file}: the IPv${fam} ${t.name} table holds ${wrong} ("${l}"): the IPv4/IPv6 split is wrong`);
      }
    }
  }
  return { file, v4, v6 };
}

/** Reads a golden (or derived) file, path relative to the repository root. */
export function readGolden(file: string): GoldenRules {
  return parseGolden(fs.readFileSync(path.join(ROOT, file), 'utf8'), file);
}

/** iptables-restore input: the golden's tables as they are, then every other table of TABLES empty. */
export function restoreInput(tables: RestoreTable[] | undefined): string {
  const out: string[] = [];
  for (const t of tables ?? []) out.push(`*${t.name}`, ...t.lines, 'COMMIT');
  for (const name of TABLES) if (!(tables ?? []).some((t) => t.name === name)) out.push(`*${name}`, 'COMMIT');
  return out.join('\n') + '\n';
}

/** Rules per chain: -A and -I lines of a restore input, or -A lines of `iptables -S`. */
export function rulesPerChain(lines: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of lines) {
    const a = /^-[AI] (\S+) /.exec(l);
    if (a) m.set(a[1], (m.get(a[1]) ?? 0) + 1);
  }
  return m;
}

function checkPod(node: SimNode, pod: SimPod): void {
  // A pod of this node, never the node's own or the machine's namespace.
  if (!node.pods.includes(pod) || !pod.netnsPath.includes(`/${node.id}-`) || pod.netnsPath === node.netnsPath) {
    throw new Error(`refusing to touch iptables outside a pod netns of ${node.id}: ${pod.netnsPath}`);
  }
}

/** istio-iptables' route table for TPROXY (InboundTProxyRouteTable, tools/common/config/config.go). */
export const TPROXY_ROUTE_TABLE = 133;

/** The mark of the golden's TPROXY target ("--tproxy-mark 1337/0xffffffff"), if it has one. */
export function tproxyMark(tables: RestoreTable[] | undefined): number | undefined {
  for (const t of tables ?? []) {
    for (const l of t.lines) {
      const m = /-j TPROXY .*--tproxy-mark (\d+)/.exec(l);
      if (m) return Number(m[1]);
    }
  }
  return undefined;
}

/**
 * The routes istio-iptables adds beside its TPROXY rules (tools/common/tproxy/run_linux.go
 * configureTProxyRoutes): "ip rule add fwmark MARK lookup 133" and "ip route add local default
 * dev lo table 133", per family; removed again for a golden without TPROXY.
 */
async function tproxyRoutes(node: SimNode, pod: SimPod, fam: 4 | 6, mark: number | undefined): Promise<void> {
  const o = { netnsPath: pod.netnsPath, inCgroup: false };
  const ip = ['ip', fam === 4 ? '-4' : '-6'];
  const table = String(TPROXY_ROUTE_TABLE);
  for (let i = 0; i < 4; i++) {
    const rules = (await node.exec([...ip, 'rule', 'show', 'table', table], o)).stdout;
    if (!rules.trim()) break;
    await node.exec([...ip, 'rule', 'del', 'table', table], o);
  }
  await node.exec([...ip, 'route', 'flush', 'table', table], { ...o, allowFail: true });
  if (mark === undefined) return;
  await node.exec([...ip, 'rule', 'add', 'fwmark', String(mark), 'lookup', table], o);
  await node.exec([...ip, 'route', 'add', 'local', fam === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', table], o);
}

/**
 * Loads a golden into the pod's netns with iptables-restore and ip6tables-restore (replacing what
 * an earlier golden left: a golden without IPv6 rules leaves the pod's IPv6 tables empty, as
 * istio-cni does for a pod without IPv6 capture), puts ::6/128 on lo when it has IPv6 rules (as
 * Istio's pod setup does: tools/common/tproxy/run_linux.go configureIPv6Addresses), adds the
 * TPROXY routes when it has a TPROXY target, and checks the kernel's listing against the golden.
 * Returns what `iptables -S` lists per table.
 */
export async function loadGolden(node: SimNode, pod: SimPod, golden: GoldenRules): Promise<{ listed4: string; listed6: string }> {
  checkPod(node, pod);
  const o = { netnsPath: pod.netnsPath, inCgroup: false, timeoutMs: 20000 };
  const dir = path.join(node.workDir, 'istio-golden');
  fs.mkdirSync(dir, { recursive: true });
  const listed: Record<4 | 6, string> = { 4: '', 6: '' };
  for (const fam of [4, 6] as const) {
    const tables = fam === 4 ? golden.v4 : golden.v6;
    const tool = fam === 4 ? 'iptables' : 'ip6tables';
    const file = path.join(dir, `${pod.name}.v${fam}.rules`);
    fs.writeFileSync(file, restoreInput(tables));
    const res = await node.exec([`${tool}-restore`, '-w', '5', file], { ...o, allowFail: true });
    if (res.code !== 0)
      throw new Error(`${tool}-restore of ${golden.file} in pod ${pod.name} failed (exit ${res.code}): ${res.stderr.trim()}`);
    await tproxyRoutes(node, pod, fam, tproxyMark(tables));
    for (const table of TABLES) {
      const have = (await node.exec([tool, '-w', '5', '-t', table, '-S'], o)).stdout;
      listed[fam] += `# ${table}\n${have}`;
      const want = rulesPerChain(tables?.find((t) => t.name === table)?.lines ?? []);
      const got = rulesPerChain(have.split('\n'));
      for (const chain of new Set([...want.keys(), ...got.keys()])) {
        if ((want.get(chain) ?? 0) !== (got.get(chain) ?? 0)) {
          throw new Error(
            `${tool} -t ${table} in pod ${pod.name}: chain ${chain} lists ${got.get(chain) ?? 0} rules, ${golden.file} gives ${want.get(chain) ?? 0}:\n${have}`,
          );
        }
      }
    }
  }
  if (golden.v6) {
    const lo = (await node.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', 'lo'], o)).stdout;
    if (!/\sinet6 ::6\/128\s/.test(lo)) await node.exec(['ip', '-6', 'addr', 'add', '::6/128', 'dev', 'lo', 'nodad'], o);
  }
  return { listed4: listed[4], listed6: listed[6] };
}
