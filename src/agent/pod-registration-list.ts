/* `sluice endpoint list` (the command keeps Cilium's word): one line per pod registration, fields
 * in the order scripts rely on: IP(s), namespace/name, mode=<sidecar|ambient|none>, then free
 * text. The registry is read from the state dir, so the list works while the agent is down.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfMap } from '../bpf';
import { PROXY_PORT } from '../bpf/constants';
import { u64Codec, u8Codec, type EpStats, type Policy } from '../bpf/layout';
import { readZdsStates, type ZdsPodStatus } from '../mesh/ambient-zds';
import { decisionOf, readDecisions, type Decision } from '../mesh/controller';
import { CaptureMaps } from '../mesh/maps';
import { describePolicy } from '../mesh/sidecar-policy';
import { readPodRegistrations, type PodRegistration } from './pod-registry';

export interface ListedPodRegistration extends PodRegistration {
  /** what the kernel holds now (sl_endpoints), not only what the agent intends */
  mode: 'sidecar' | 'ambient' | 'none';
  /** the rule that decided it, the effective policy and the counters, free text */
  reason: string;
  policy?: Policy;
  counters?: { outbound: number; inbound: number; proxyBypass: number; noListener: number };
  /** ambient pods: the last known state of the hand-off to ztunnel over ZDS */
  zds?: ZdsPodStatus;
  /** the agent's latest decision for the pod and the rule behind it */
  decision?: Decision;
  /** false when the kernel leaves the pod's sockets untranslated (socket-lb.sluice.io/disabled) */
  socketLb: boolean;
}

/** Registrations from the state dir, modes and counters read back from the pinned maps. */
export function listPodRegistrations(stateDir: string, pinDir: string): ListedPodRegistration[] {
  const regs = readPodRegistrations(stateDir);
  const maps = fs.existsSync(path.join(pinDir, 'sl_endpoints')) ? CaptureMaps.open(pinDir) : undefined;
  const zdsStates = readZdsStates(path.join(stateDir, 'zds.json'));
  const decisions = readDecisions(path.join(stateDir, 'decisions.json'));
  const optOutPin = path.join(pinDir, 'sl_lb_pod_opt_out');
  const optOut = fs.existsSync(optOutPin) ? BpfMap.openPinned(optOutPin, u64Codec, u8Codec) : undefined;
  try {
    return regs.map((reg) => {
      const cookie = BigInt(reg.netnsCookie || 0);
      const policy = maps?.endpoints.get(cookie);
      const st: EpStats | undefined = maps?.stats.get(cookie);
      const counters = st && {
        outbound: Number(st.outbound),
        inbound: Number(st.inbound),
        proxyBypass: Number(st.proxyBypass),
        noListener: Number(st.noListener),
      };
      const mode = policy?.mode ?? 'none';
      const decision = decisionOf(decisions, reg);
      const parts = [decision ? `rule="${decision.rule}"` : ''];
      if (policy?.mode === 'sidecar') {
        // the proxy's identity and the DNS choice as the agent decided them (the kernel's policy
        // does not hold them)
        const { proxy, dns } = decision ?? {};
        if (proxy) parts.push(`proxy-uid=${proxy.uid} proxy-gid=${proxy.gid}`);
        if (dns) parts.push(`dns-capture=${dns.capture ? 'on' : 'off'}(${dns.from})`);
        parts.push(describePolicy(policy));
      }
      const zds =
        policy?.mode === 'ambient' && zdsStates
          ? (zdsStates[reg.uid] ?? { state: 'pending', attempts: 0, since: '' })
          : undefined;
      if (policy?.mode === 'ambient') {
        if (zds) parts.push(`zds=${zds.state}${zds.error ? ` zds-error="${zds.error}"` : ''}`);
        parts.push(`node-proxy=${policy.outboundPort}/${policy.inboundPort}/${PROXY_PORT.hbone}`);
      }
      if (counters)
        parts.push(
          `captured-out=${counters.outbound} captured-in=${counters.inbound} proxy-bypass=${counters.proxyBypass} in-no-listener=${counters.noListener}`,
        );
      if (decision && decision.mode !== mode) parts.push(`(agent intends mode=${decision.mode})`);
      const socketLb = optOut?.get(cookie) === undefined;
      if (!socketLb) parts.push('socket-lb=off');
      return { ...reg, mode, reason: parts.filter(Boolean).join(' '), policy, counters, zds, decision, socketLb };
    });
  } finally {
    maps?.close();
    optOut?.close();
  }
}

export function podName(reg: PodRegistration): string {
  if (reg.namespace || reg.name) return `${reg.namespace || '-'}/${reg.name || '-'}`;
  return `-/${reg.containerId.slice(0, 12)}`; // a runtime that is not Kubernetes (podman)
}

export function formatPodRegistrationList(regs: ListedPodRegistration[]): string {
  const rows = regs.map((reg) => [
    reg.ips.join(',') || '-',
    podName(reg),
    `mode=${reg.mode}`,
    `netns-cookie=${reg.netnsCookie} container=${reg.containerId.slice(0, 12)} if=${reg.ifName} ${reg.reason}`.trim(),
  ]);
  const widths = [0, 1, 2].map((i) => Math.max(0, ...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c)).join('  ')).join('\n') + (rows.length ? '\n' : '');
}
