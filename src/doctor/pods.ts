/* Every pod the CNI plugin registered, as the kernel holds it: the mode (and policy) in
 * sl_endpoints equal to what the agent decides from the pod's objects now; a captured pod's
 * sk_lookup link (and, ambient, its tcx link) attached to its namespace; its proxy listening on the
 * ports its capture sends to, and known to the datapath (sl_listeners); ambient pods acked by
 * ztunnel; and no istio-init or istio-cni rules beside sluice's capture.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfMap, netnsCookieOf } from '../bpf';
import { PROXY_PORT } from '../bpf/constants';
import { describeLink, LINK_TYPE, type LinkDesc } from '../bpf/introspect';
import { listenerKeyCodec, POL_IN_ALL, POL_NO_INBOUND, POL_OUT_ALL, u64Codec, type Policy } from '../bpf/layout';
import { readPodRegistrations, type PodRegistration } from '../agent/pod-registry';
import { decisionOf, readDecisions } from '../mesh/controller';
import type { Config } from '../config';
import { netnsLinkPin, tcxLinkPin } from '../datapath';
import type { Namespace, Pod } from '../k8s/types';
import { readZdsStates, type ZdsPodStatus } from '../mesh/ambient-zds';
import { CaptureMaps } from '../mesh/maps';
import { decideMode } from '../mesh/mode';
import { describePolicy, PROXY_PORTS } from '../mesh/sidecar-policy';
import { agentObject, type AgentFacts } from './agent';
import { describeLeftovers, inNetns, readIstioRules, type IstioLeftover } from './istio-rules';
import type { ClusterObjects } from './objects';
import { count, fail, ok, warn, type CheckResult } from './report';

/** ztunnel's HBONE port (ambient inbound over mTLS) */
/** A ZDS hand-off still pending after this long is stuck (5 s deadline per request, plus room). */
export const ZDS_PENDING_FAIL_MS = 10_000;

type Mode = 'sidecar' | 'ambient' | 'none';

export interface LinkState {
  pin: string;
  pinned: boolean;
  desc?: LinkDesc;
  error?: string;
}

export interface PodFacts {
  reg: PodRegistration;
  /** the registration's network namespace still is the pod's (same cookie) */
  netnsAlive: boolean;
  intended: { mode: Mode; rule: string; policy?: Policy; from: 'agent' | 'objects' | 'registration' };
  /** what sl_endpoints holds for the pod's cookie */
  kernel?: Policy;
  netnsIno?: number;
  skLookup?: LinkState;
  tcx?: LinkState;
  zds?: ZdsPodStatus;
  /** TCP ports something listens on in the pod's namespace */
  listening?: number[];
  listenError?: string;
  /** proxy ports sl_listeners holds a socket for, for this pod */
  datapathListeners: number[];
  istio?: IstioLeftover[];
  istioErrors?: string[];
}

export interface PodsFacts {
  stateDir: string;
  pods: PodFacts[];
  /** netns cookies sl_endpoints holds a policy for that no registration names */
  unregistered: string[];
  mapsError?: string;
  /** ztunnel-uds-address is set */
  zdsConfigured: boolean;
  /** the ZDS state file exists (the agent served ZDS) */
  zdsStateKnown: boolean;
  /** ztunnels connected now, when the agent answered */
  ztunnelsConnected?: number;
  agentUp: boolean;
  now: number;
}

function linkState(pin: string): LinkState {
  const s: LinkState = { pin, pinned: fs.existsSync(pin) };
  if (s.pinned) {
    try {
      s.desc = describeLink(pin);
    } catch (e) {
      s.error = (e as Error).message;
    }
  }
  return s;
}

/** TCP ports in LISTEN inside a namespace (`ss -Hltn`: the local address is the 4th column). */
export function parseListeningPorts(ssOutput: string): number[] {
  const ports = new Set<number>();
  for (const line of ssOutput.split('\n')) {
    const local = line.trim().split(/\s+/)[3];
    const port = local ? Number(local.slice(local.lastIndexOf(':') + 1)) : NaN;
    if (Number.isInteger(port)) ports.add(port);
  }
  return [...ports].sort((a, b) => a - b);
}

/** The ports of the proxies' listeners in sl_listeners, by netns cookie. */
function datapathListeners(pinDir: string): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  // the values are the sockets (read back as their cookies): only the keys are used
  const m = BpfMap.openPinned(path.join(pinDir, 'sl_listeners'), listenerKeyCodec, u64Codec);
  try {
    for (const k of m.keys()) {
      const cookie = k.netnsCookie.toString();
      if (!out.has(cookie)) out.set(cookie, new Set());
      out.get(cookie)!.add(k.port);
    }
  } finally {
    m.close();
  }
  return out;
}

/** Whether the objects can decide a pod's mode: the API answered, Pods and Namespaces were readable. */
function objectsUsable(o: ClusterObjects): boolean {
  if (o.source === 'standalone') return !o.unreadable.some((u) => u.what.startsWith('objects directory'));
  return o.api?.reachable === true && !o.unreadable.some((u) => u.what === "this node's Pods" || u.what === 'Namespaces');
}

async function intendedMode(
  cfg: Config,
  reg: PodRegistration,
  agent: AgentFacts,
  objects: ClusterObjects | undefined,
): Promise<PodFacts['intended']> {
  let pod: Pod | undefined;
  let ns: Namespace | undefined;
  let from: PodFacts['intended']['from'];
  if (agent.status) {
    pod = await agentObject<Pod>(agent, `Pod/${reg.namespace}/${reg.name}`);
    ns = await agentObject<Namespace>(agent, `Namespace/${reg.namespace}`);
    from = 'agent';
  } else if (objects && objectsUsable(objects)) {
    pod = objects.pods.find((p) => p.metadata.namespace === reg.namespace && p.metadata.name === reg.name);
    ns = objects.namespaces.find((n) => n.metadata.name === reg.namespace);
    from = 'objects';
  } else {
    const recorded = decisionOf(readDecisions(path.join(cfg.stateDir, 'decisions.json')), reg);
    return { mode: recorded?.mode ?? 'none', rule: recorded?.rule ?? 'no decision recorded', from: 'registration' };
  }
  const d = decideMode(pod, ns, reg.ips, {
    excludeNamespaces: cfg.excludeNamespaces,
    dnsCapture: cfg.meshDnsCapture,
    ambientDnsCapture: cfg.ambientDnsCapture,
    proxyUid: cfg.meshProxyUid,
    proxyGid: cfg.meshProxyGid,
  });
  return { mode: d.mode, rule: d.rule, policy: d.policy, from };
}

export async function gatherPodFacts(cfg: Config, agent: AgentFacts, objects: ClusterObjects | undefined): Promise<PodsFacts> {
  const facts: PodsFacts = {
    stateDir: cfg.stateDir,
    pods: [],
    unregistered: [],
    zdsConfigured: cfg.ztunnelUdsAddress !== '',
    zdsStateKnown: false,
    ztunnelsConnected: agent.status?.zds?.ztunnels.length,
    agentUp: agent.status !== undefined,
    now: Date.now(),
  };
  const regs = readPodRegistrations(cfg.stateDir);
  let maps: CaptureMaps | undefined;
  let listeners = new Map<string, Set<number>>();
  try {
    maps = CaptureMaps.open(cfg.bpfPinDir);
    listeners = datapathListeners(cfg.bpfPinDir);
  } catch (e) {
    facts.mapsError = (e as Error).message;
  }
  const zdsStates = readZdsStates(path.join(cfg.stateDir, 'zds.json'));
  facts.zdsStateKnown = zdsStates !== undefined;
  try {
    for (const reg of regs) {
      let netnsAlive = false;
      try {
        netnsAlive = netnsCookieOf(reg.netnsPath).toString() === reg.netnsCookie;
      } catch {
        netnsAlive = false;
      }
      const p: PodFacts = {
        reg,
        netnsAlive,
        intended: await intendedMode(cfg, reg, agent, objects),
        kernel: maps?.endpoints.get(BigInt(reg.netnsCookie || 0)),
        datapathListeners: [...(listeners.get(reg.netnsCookie) ?? [])].sort((a, b) => a - b),
        zds: zdsStates?.[reg.uid],
      };
      const captured = p.kernel !== undefined && p.kernel.mode !== 'none';
      if (netnsAlive && (captured || p.intended.mode !== 'none')) {
        p.netnsIno = fs.statSync(reg.netnsPath).ino;
        p.skLookup = linkState(netnsLinkPin(cfg.bpfPinDir, reg.netnsCookie));
        if (p.kernel?.mode === 'ambient' || p.intended.mode === 'ambient')
          p.tcx = linkState(tcxLinkPin(cfg.bpfPinDir, reg.netnsCookie));
      }
      if (netnsAlive && captured) {
        try {
          p.listening = parseListeningPorts(inNetns(reg.netnsPath, ['ss', '-Hltn']));
        } catch (e) {
          p.listenError = (e as Error).message.split('\n')[0];
        }
        const rules = readIstioRules(reg.netnsPath);
        p.istio = rules.leftovers;
        p.istioErrors = rules.errors;
      }
      facts.pods.push(p);
    }
    const registered = new Set(regs.map((e) => e.netnsCookie));
    facts.unregistered = (maps?.endpoints.keys() ?? []).map(String).filter((c) => !registered.has(c));
  } finally {
    maps?.close();
  }
  return facts;
}

function podName(reg: PodRegistration): string {
  return reg.namespace || reg.name ? `${reg.namespace}/${reg.name}` : `container ${reg.containerId.slice(0, 12)}`;
}

/** The ports a captured pod's proxy must listen on for its policy to deliver anything. */
export function requiredProxyPorts(policy: Policy): number[] {
  if (policy.mode === 'ambient') {
    return policy.flags & POL_NO_INBOUND ? [policy.outboundPort] : [policy.outboundPort, policy.inboundPort, PROXY_PORT.hbone];
  }
  const ports: number[] = [];
  if (policy.flags & POL_OUT_ALL || policy.includeCidrs.length > 0) ports.push(policy.outboundPort || PROXY_PORTS.outbound);
  if (policy.flags & POL_IN_ALL || policy.includeInPorts.length > 0) ports.push(policy.inboundPort || PROXY_PORTS.inbound);
  return ports;
}

function samePolicy(a: Policy, b: Policy): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function policyText(p: Policy): string {
  return p.mode === 'sidecar'
    ? describePolicy(p)
    : JSON.stringify({ flags: p.flags, ports: [p.outboundPort, p.inboundPort, p.dnsPort], podIps: p.podIps });
}

export function judgePods(f: PodsFacts): CheckResult[] {
  if (f.mapsError && f.pods.length > 0)
    return [
      fail(
        'pods.mode',
        `${count(f.pods.length, 'pod')} registered, but the capture maps cannot be read: ${f.mapsError}`,
        'start the agent: it creates and pins the maps',
      ),
    ];
  const out: CheckResult[] = [];
  if (f.unregistered.length) {
    out.push(
      warn(
        'pods.unregistered',
        `sl_endpoints captures ${count(f.unregistered.length, 'network namespace')} no registered pod has (netns cookies ${f.unregistered.join(', ')}): left behind by a registration that is gone`,
        'restart the agent: it releases the capture of namespaces it has no registration for',
      ),
    );
  }
  if (f.pods.length === 0) return [ok('pods.mode', `no pods registered by the CNI plugin (state-dir ${f.stateDir})`), ...out];
  const live = f.pods.filter((p) => p.netnsAlive);
  for (const p of f.pods.filter((x) => !x.netnsAlive)) {
    out.push(
      warn(
        'pods.netns',
        `${podName(p.reg)}: its network namespace ${p.reg.netnsPath} is gone or another (registration of netns cookie ${p.reg.netnsCookie} is stale)`,
        'restart the agent: it drops registrations whose namespace is gone',
      ),
    );
  }
  out.push(...judgeModes(live));
  const captured = live.filter((p) => p.kernel && p.kernel.mode !== 'none');
  out.push(...judgeLinks(live));
  out.push(
    ...judgeZtunnel(
      f,
      captured.filter((p) => p.kernel!.mode === 'ambient'),
    ),
  );
  out.push(...judgeProxies(captured));
  out.push(...judgeIstioRules(captured));
  return out;
}

function judgeModes(pods: PodFacts[]): CheckResult[] {
  const id = 'pods.mode';
  const fix = "restart the agent: it re-applies every pod's decision at start (and on every change of the pod's objects)";
  const out: CheckResult[] = [];
  const counts: Record<Mode, number> = { sidecar: 0, ambient: 0, none: 0 };
  for (const p of pods) {
    const have: Mode = p.kernel?.mode ?? 'none';
    const want = p.intended;
    const basis = want.from === 'registration' ? " (the agent's last recorded decision: no objects to decide from)" : '';
    counts[have]++;
    if (have !== want.mode) {
      const holds = p.kernel ? `mode=${have}` : `nothing (no sl_endpoints entry for netns cookie ${p.reg.netnsCookie})`;
      out.push(fail(id, `${podName(p.reg)}: intended mode=${want.mode} (${want.rule})${basis}, the kernel holds ${holds}`, fix));
    } else if (p.kernel && want.policy && !samePolicy(p.kernel, want.policy)) {
      out.push(
        fail(
          id,
          `${podName(p.reg)}: mode=${have} as intended, but the kernel's policy [${policyText(p.kernel)}] is not the intended [${policyText(want.policy)}]`,
          fix,
        ),
      );
    }
  }
  if (out.length === 0)
    out.push(
      ok(
        id,
        `${count(pods.length, 'registered pod')}: the kernel holds the intended mode of each (sidecar ${counts.sidecar}, ambient ${counts.ambient}, none ${counts.none})`,
      ),
    );
  return out;
}

function linkProblem(l: LinkState | undefined, type: number, target: bigint | undefined, what: string): string | undefined {
  if (!l?.pinned) return `no ${what} link pinned${l ? ` at ${l.pin}` : ''}`;
  if (l.error || !l.desc) return `cannot read the ${what} link at ${l.pin}: ${l.error}`;
  if (l.desc.type !== type) return `the link at ${l.pin} is not a ${what} link (type ${l.desc.type})`;
  if (l.desc.target === 0n) return `the ${what} link at ${l.pin} is detached`;
  if (target !== undefined && l.desc.target !== target)
    return `the ${what} link at ${l.pin} is attached elsewhere (${l.desc.target}, the pod's is ${target})`;
  return undefined;
}

function judgeLinks(pods: PodFacts[]): CheckResult[] {
  const id = 'pods.links';
  const out: CheckResult[] = [];
  let skl = 0;
  let tcx = 0;
  for (const p of pods) {
    if (!p.kernel || p.kernel.mode === 'none') continue;
    const a = linkProblem(p.skLookup, LINK_TYPE.netns, p.netnsIno === undefined ? undefined : BigInt(p.netnsIno), 'sk_lookup');
    if (a)
      out.push(
        fail(
          id,
          `${podName(p.reg)} (${p.kernel.mode}): ${a}: inbound capture is off`,
          'restart the agent: it enrols the pod again',
        ),
      );
    else skl++;
    if (p.kernel.mode === 'ambient') {
      // the tcx link on lo has ifindex 1 (loopback) as its target
      const b = linkProblem(p.tcx, LINK_TYPE.tcx, 1n, 'tcx');
      if (b)
        out.push(
          fail(
            id,
            `${podName(p.reg)} (ambient): ${b}: the app's replies to ztunnel's source-preserving connections are not routed back`,
            'restart the agent: it enrols the pod again',
          ),
        );
      else tcx++;
    }
  }
  if (out.length === 0 && skl > 0)
    out.push(
      ok(id, `captured pods' links attached: ${count(skl, 'sk_lookup link')}${tcx ? `, ${count(tcx, 'tcx link')} on lo` : ''}`),
    );
  return out;
}

function judgeZtunnel(f: PodsFacts, ambient: PodFacts[]): CheckResult[] {
  const id = 'pods.ztunnel';
  if (ambient.length === 0) return [];
  if (!f.zdsConfigured)
    return [
      ok(id, `ztunnel-uds-address is empty: ${count(ambient.length, 'ambient pod')} not handed to a ztunnel (not checked)`),
    ];
  const out: CheckResult[] = [];
  const fix = "look at ztunnel's log and `sluice endpoint list` (zds=…); the agent retries a refused pod with backoff";
  if (f.agentUp && f.ztunnelsConnected === 0) {
    out.push(
      fail(
        id,
        `no ztunnel is connected to the agent's ZDS socket: ${count(ambient.length, 'ambient pod')} fail${ambient.length === 1 ? 's' : ''} closed`,
        'start ztunnel on this node (its DaemonSet mounts the same ztunnel-uds-address)',
      ),
    );
  }
  const stale = f.agentUp ? '' : ' (last known state: agent down)';
  for (const p of ambient) {
    const st = p.zds;
    if (!st)
      out.push(
        fail(id, `${podName(p.reg)}: never handed to ztunnel (no ZDS state for uid ${p.reg.uid || '(none)'})${stale}`, fix),
      );
    else if (st.state === 'nack')
      out.push(
        fail(id, `${podName(p.reg)}: ztunnel refused it: ${st.error ?? 'no reason given'} (attempt ${st.attempts})${stale}`, fix),
      );
    else if (st.state === 'pending') {
      const ms = st.since ? f.now - Date.parse(st.since) : Infinity;
      const age = Number.isFinite(ms) ? `${Math.round(ms / 1000)} s` : 'an unknown time';
      if (ms > ZDS_PENDING_FAIL_MS)
        out.push(fail(id, `${podName(p.reg)}: not acked by ztunnel for ${age}: its traffic fails closed${stale}`, fix));
      else out.push(warn(id, `${podName(p.reg)}: hand-off to ztunnel in progress (pending for ${age})${stale}`));
    }
  }
  if (out.length === 0)
    out.push(ok(id, `${count(ambient.length, 'ambient pod')} acked by ztunnel (${f.ztunnelsConnected ?? '?'} connected)`));
  return out;
}

function judgeProxies(pods: PodFacts[]): CheckResult[] {
  const id = 'pods.proxy';
  const out: CheckResult[] = [];
  let fine = 0;
  for (const p of pods) {
    const name = `${podName(p.reg)} (${p.kernel!.mode})`;
    const need = requiredProxyPorts(p.kernel!);
    if (p.listenError) {
      out.push(warn(id, `${name}: cannot list its listeners: ${p.listenError}`, 'install iproute2 (ss) beside sluice'));
      continue;
    }
    const missing = need.filter((port) => !p.listening!.includes(port));
    const unknown = need.filter((port) => p.listening!.includes(port) && !p.datapathListeners.includes(port));
    const proxy = p.kernel!.mode === 'ambient' ? 'ztunnel' : 'the sidecar';
    if (missing.length) {
      out.push(
        fail(
          id,
          `${name}: nothing listens on ${missing.join(', ')} in its network namespace: ${proxy} is not running there, captured connections fail closed`,
          `start ${proxy} for the pod (or remove the pod from the mesh)`,
        ),
      );
    } else if (unknown.length) {
      out.push(
        fail(
          id,
          `${name}: ${proxy} listens on ${unknown.join(', ')} but sl_listeners does not hold it (opened before the pod was enrolled?): captured connections fail closed`,
          `restart ${proxy}: a listener opened before enrolment is never offered to the datapath`,
        ),
      );
    } else fine++;
  }
  if (out.length === 0 && fine > 0)
    out.push(
      ok(id, `the proxies of ${count(fine, 'captured pod')} listen on their capture ports and the datapath knows each listener`),
    );
  return out;
}

function judgeIstioRules(pods: PodFacts[]): CheckResult[] {
  const id = 'pods.iptables';
  const out: CheckResult[] = [];
  let checked = 0;
  for (const p of pods) {
    const name = `${podName(p.reg)} (${p.kernel!.mode})`;
    if (p.istio?.length) {
      out.push(
        fail(
          id,
          `${name}: Istio's own capture rules are in its network namespace (${describeLeftovers(p.istio)}): connections are redirected twice`,
          'install Istio without istio-init and without its CNI node agent (sluice replaces both), then recreate the pod',
        ),
      );
    } else if (p.istioErrors?.length) {
      out.push(
        warn(id, `${name}: cannot read its rules: ${p.istioErrors.join('; ')}`, 'install nftables and iptables beside sluice'),
      );
    } else checked++;
  }
  if (out.length === 0 && checked > 0) out.push(ok(id, `no istio-init or istio-cni rules in ${count(checked, 'captured pod')}`));
  return out;
}
