/* Sockets left on a dead backend: when a backend leaves a service frontend (LbSync's departures),
 * the sockets that frontend translated to it are destroyed, in the node's network namespace and
 * in every registered pod's. A connected UDP socket otherwise keeps talking to a deleted backend
 * for as long as the client lives (Cilium's cilium#12859, still reported as #48096); TCP only
 * with bpf-lb-sock-terminate-pod-connections "true" (Cilium's key), since a TCP peer that is
 * gone resets or times out the connection by itself, and one that is still serving may be
 * draining gracefully.
 *
 * How: the departed {frontend, backend} pairs go into sl_lb_sock_dead, by address, then the
 * iterator programs of bpf/sock_destroy.c walk the sockets of each namespace (an iterator sees the
 * namespace of the thread that creates it: the shim enters each pod's namespace on a thread of its
 * own) and destroy every socket still connected to such a backend through such a frontend, as its
 * socket storage (sl_lb_sock_rev, the reverse translation) records; then the pairs are removed.
 * Sockets translated by an earlier release are found too: that record's layout never changed. The client sees ECONNABORTED and
 * its next connect chooses among the live backends. Needs the bpf_sock_destroy kfunc (Linux 6.5);
 * without it the agent says so once and nothing is destroyed.
 */
import * as fs from 'node:fs';
import { BpfError, type BpfMap, openPinnedSet, SocketIterator } from '../bpf';
import { deadKeyCodec, destroyedCodec, IPPROTO_TCP, IPPROTO_UDP, protoName, u8Codec, type DeadKey } from '../bpf/layout';
import { sockDestroyProgPin } from '../datapath';
import { log } from '../log';
import type { Departure } from './sync';

/** sl_lb_sock_dead's size (bpf/lib/lb_maps.h): departures beyond it are handled in rounds. */
const DEAD_MAP_MAX = 65536;
/** Records decoded from one iterator run for the log; the rest are only counted. */
const LOGGED_RECORDS = 16;

export interface SocketDestroyOptions {
  /** bpf-lb-sock-terminate-pod-connections: destroy TCP sockets too (default false: connected UDP only) */
  terminateTcp?: boolean;
}

/** A network namespace to look for sockets in: undefined is the agent's own (the node's). */
export type NetnsPath = string | undefined;

export interface DestroyReport {
  /** departures acted on (those of a protocol that is destroyed) */
  departures: number;
  namespaces: number;
  tcp: number;
  udp: number;
  /** `proto backend via dialed-address` of the first sockets destroyed */
  peers: string[];
  /** namespaces that could not be searched, with why (a pod going away meanwhile, usually) */
  failed: Array<{ netns: string; error: string }>;
  ms: number;
}

export class SocketDestroyer {
  private warned = false;

  private constructor(
    private readonly pinDir: string,
    private readonly dead: BpfMap<DeadKey, number>,
    private readonly terminateTcp: boolean,
    /** why sockets cannot be destroyed here ('' when they can) */
    readonly unavailable: string,
  ) {}

  /**
   * Opens the pinned pair map. `unavailable` is why the iterators are missing (installDatapath's
   * answer); '' when they were pinned.
   */
  static open(pinDir: string, unavailable: string, opts: SocketDestroyOptions = {}): SocketDestroyer {
    const dead = openPinnedSet(pinDir, (open) => open('sl_lb_sock_dead', deadKeyCodec, u8Codec));
    let why = unavailable;
    if (!why) {
      const missing = (['tcp', 'udp'] as const).map((p) => sockDestroyProgPin(pinDir, p)).filter((p) => !fs.existsSync(p));
      if (missing.length) why = `socket-destroy iterators not pinned (${missing.join(', ')})`;
    }
    return new SocketDestroyer(pinDir, dead, opts.terminateTcp ?? false, why);
  }

  /** Which protocols' sockets are destroyed. */
  protocols(): number[] {
    return this.terminateTcp ? [IPPROTO_UDP, IPPROTO_TCP] : [IPPROTO_UDP];
  }

  /**
   * Destroys the sockets left on departed backends in each namespace. Returns undefined when
   * there was nothing to do; never throws for a namespace that cannot be searched (it is in
   * `failed`).
   */
  destroy(departures: readonly Departure[], namespaces: readonly NetnsPath[]): DestroyReport | undefined {
    const protos = new Set(this.protocols());
    const relevant = departures.filter((d) => protos.has(d.proto));
    if (relevant.length === 0) return undefined;
    if (this.unavailable) {
      if (!this.warned) {
        log.warn('sockets on backends that left their service are not destroyed on this node', { reason: this.unavailable });
        this.warned = true;
      }
      return undefined;
    }
    const t0 = process.hrtime.bigint();
    const report: DestroyReport = {
      departures: relevant.length,
      namespaces: namespaces.length,
      tcp: 0,
      udp: 0,
      peers: [],
      failed: [],
      ms: 0,
    };
    const useTcp = relevant.some((d) => d.proto === IPPROTO_TCP);
    const useUdp = relevant.some((d) => d.proto === IPPROTO_UDP);
    const iterators: Array<[number, SocketIterator]> = [];
    try {
      if (useUdp) iterators.push([IPPROTO_UDP, SocketIterator.open(sockDestroyProgPin(this.pinDir, 'udp'))]);
      if (useTcp) iterators.push([IPPROTO_TCP, SocketIterator.open(sockDestroyProgPin(this.pinDir, 'tcp'))]);
      for (let start = 0; start < relevant.length; start += DEAD_MAP_MAX) {
        const keys: DeadKey[] = relevant
          .slice(start, start + DEAD_MAP_MAX)
          .map((d) => ({ vip: d.vip, vipPort: d.vipPort, backend: d.backend, backendPort: d.backendPort, proto: d.proto }));
        this.dead.setMany(keys.map((k) => [k, 1]));
        try {
          for (const netns of namespaces) this.searchNamespace(netns, iterators, report);
        } finally {
          for (const k of keys) this.dead.delete(k);
        }
      }
    } finally {
      for (const [, it] of iterators) it.close();
    }
    report.ms = Number(process.hrtime.bigint() - t0) / 1e6;
    return report;
  }

  private searchNamespace(netns: NetnsPath, iterators: Array<[number, SocketIterator]>, report: DestroyReport): void {
    for (const [proto, it] of iterators) {
      let out: { bytes: number; output: Buffer };
      try {
        out = it.run(netns, LOGGED_RECORDS * destroyedCodec.size);
      } catch (e) {
        if (!(e instanceof BpfError)) throw e;
        report.failed.push({ netns: netns ?? 'node', error: e.message });
        return;
      }
      const n = Math.floor(out.bytes / destroyedCodec.size);
      if (proto === IPPROTO_TCP) report.tcp += n;
      else report.udp += n;
      for (
        let off = 0;
        off + destroyedCodec.size <= out.output.length && report.peers.length < LOGGED_RECORDS;
        off += destroyedCodec.size
      ) {
        const r = destroyedCodec.decode(out.output, off);
        const hostPort = (ip: string, port: number) => `${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
        report.peers.push(
          `${protoName(r.proto)} ${hostPort(r.peer, r.peerPort)} via ${hostPort(r.vip, r.vipPort)}${netns ? ` in ${netns}` : ''}`,
        );
      }
    }
  }

  close(): void {
    this.dead.close();
  }
}
