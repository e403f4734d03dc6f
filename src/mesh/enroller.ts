/* Puts a pod's capture decision into the kernel: its policy in sl_endpoints (keyed by netns
 * cookie), its IPs in sl_pod_ips, a per-pod counter entry, and an sk_lookup link on its netns.
 * Enrolment writes the policy last (it makes capture live); release removes it first.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { attachNetns, inpodRouting } from '../bpf';
import { POL_TPROXY, type Policy } from '../bpf/layout';
import { INBOUND_ROUTING, LO_MARK_PROG, netnsLinkPin, PROGS_DIR, SK_LOOKUP_PROG, tcxLinkPin } from '../datapath';
import { log } from '../log';
import type { CaptureMaps } from './maps';

export interface EnrolTarget {
  netnsCookie: string;
  netnsPath: string;
  ips: string[];
}

const ZERO_STATS = { outbound: 0n, inbound: 0n, proxyBypass: 0n, noListener: 0n };

/**
 * Envoy hands inbound IPv6 connections to the app from ::6 (as from 127.0.0.6 for IPv4), and
 * Istio's pod setup puts ::6 on lo for that; sluice replaces that setup, so it does the same.
 */
function addInboundPassthroughV6(netnsPath: string): void {
  execFileSync('nsenter', [`--net=${netnsPath}`, '--', 'ip', '-6', 'addr', 'replace', '::6/128', 'dev', 'lo', 'nodad'], {
    stdio: 'pipe',
    timeout: 5000,
  });
}

/** Does the pod's proxy hand inbound connections to the app from the client's own address? */
function sourcePreservingInbound(policy: Policy): boolean {
  return policy.mode === 'ambient' || (policy.mode === 'sidecar' && (policy.flags & POL_TPROXY) !== 0);
}

export class Enroller {
  constructor(
    private readonly maps: CaptureMaps,
    private readonly pinDir: string,
  ) {}

  /** The node's addresses: traffic from them (kubelet probes) is not captured inbound (ambient). */
  setNodeIps(ips: string[]): void {
    const want = new Set(ips);
    for (const ip of this.maps.nodeIps.keys()) if (!want.has(ip)) this.maps.nodeIps.delete(ip);
    for (const ip of want) this.maps.nodeIps.set(ip, 1);
  }

  /** The policy the kernel holds for a pod, if any. */
  programmed(netnsCookie: string): Policy | undefined {
    return this.maps.endpoints.get(BigInt(netnsCookie));
  }

  enrol(t: EnrolTarget, policy: Policy): void {
    const cookie = BigInt(t.netnsCookie);
    if (policy.mode === 'sidecar' && t.ips.some((ip) => ip.includes(':'))) addInboundPassthroughV6(t.netnsPath);
    if (this.maps.stats.get(cookie) === undefined) this.maps.stats.set(cookie, ZERO_STATS);
    for (const ip of t.ips) this.maps.podIps.set(ip, cookie);
    attachNetns(path.join(this.pinDir, PROGS_DIR, SK_LOOKUP_PROG), t.netnsPath, netnsLinkPin(this.pinDir, cookie));
    this.inboundRouting(t, sourcePreservingInbound(policy));
    this.maps.endpoints.set(cookie, policy);
  }

  /**
   * The proxy connects to the app from the client's own address (ztunnel's inbound, Envoy's in
   * TPROXY mode): the app's replies must be routed back to it inside the pod (see
   * INBOUND_ROUTING). Idempotent; a failed setup is undone before the error is thrown.
   */
  private inboundRouting(t: Pick<EnrolTarget, 'netnsCookie' | 'netnsPath' | 'ips'>, add: boolean): void {
    const cfg = { ...INBOUND_ROUTING, ipv6: t.ips.some((ip) => ip.includes(':')) ? 1 : 0 };
    const linkPin = tcxLinkPin(this.pinDir, t.netnsCookie);
    if (!add && !fs.existsSync(linkPin)) return;
    try {
      inpodRouting(path.join(this.pinDir, PROGS_DIR, LO_MARK_PROG), t.netnsPath, linkPin, cfg, add);
    } catch (e) {
      if (add) {
        try {
          inpodRouting('', t.netnsPath, linkPin, cfg, false);
        } catch {
          /* the setup's error is the one worth reporting */
        }
      }
      throw e;
    }
  }

  /**
   * Gives every enrolled pod a counter entry (the programs count only into existing entries):
   * after an upgrade that had to start sl_ep_stats empty, counting resumes. Returns how many
   * were missing.
   */
  restoreStats(): number {
    let n = 0;
    for (const cookie of this.maps.endpoints.keys()) {
      if (this.maps.stats.get(cookie) !== undefined) continue;
      this.maps.stats.set(cookie, ZERO_STATS);
      n++;
    }
    return n;
  }

  /** Idempotent: releasing a pod that is not enrolled does nothing. */
  release(t: Pick<EnrolTarget, 'netnsCookie' | 'ips'> & { netnsPath?: string }): boolean {
    const cookie = BigInt(t.netnsCookie);
    const was = this.maps.endpoints.delete(cookie);
    fs.rmSync(netnsLinkPin(this.pinDir, cookie), { force: true });
    if (t.netnsPath && fs.existsSync(t.netnsPath)) {
      try {
        this.inboundRouting({ ...t, netnsPath: t.netnsPath }, false);
      } catch (e) {
        // the pod may be going away under us; its namespace takes the rules with it
        log.warn('in-pod routing not removed', { netnsCookie: t.netnsCookie, err: (e as Error).message });
      }
    }
    fs.rmSync(tcxLinkPin(this.pinDir, cookie), { force: true });
    for (const ip of t.ips) if (this.maps.podIps.get(ip) === cookie) this.maps.podIps.delete(ip);
    this.maps.stats.delete(cookie);
    return was;
  }

  /** Enrolled cookies the caller no longer knows (registrations gone while the agent was down). */
  releaseUnknown(known: Set<string>): number {
    let n = 0;
    for (const cookie of this.maps.endpoints.keys()) {
      if (known.has(cookie.toString())) continue;
      const ips = this.maps.endpoints.get(cookie)?.podIps ?? [];
      this.release({ netnsCookie: cookie.toString(), ips });
      n++;
    }
    for (const [ip, cookie] of this.maps.podIps.entries()) if (!known.has(cookie.toString())) this.maps.podIps.delete(ip);
    return n;
  }
}
