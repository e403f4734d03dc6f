/* The datapath's decisions as DatapathEvents (src/monitor/types.ts), read from the ring buffer
 * sl_events that every object shares through its pin (bpf/lib/events.h). The programs queue
 * events only while the gate sl_monitor holds 1: start() opens it and stop() closes it, so the
 * datapath pays for events only while someone watches. The programs wake the reader only when a
 * quarter of the ring is unread (monitor_submit): below that the feed drains it on a timer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DatapathEvent, EventFeed } from '../monitor/types';
import { RingReader } from '../native/ring-buffer';
import { EVENT_REASONS, EVENT_TYPES } from './constants';
import { possibleCpus } from './cpus';
import { eventCodec, IPPROTO_UDP, MODE, perCpuU64Codec, u32Codec, type EventRecord } from './layout';
import { BpfMap } from './map';
import { checkErrno, loadShim } from './shim';

/** The pins (under the agent's bpf-pin-dir) the feed reads. */
export const EVENT_MAPS = { ring: 'sl_events', gate: 'sl_monitor', lost: 'sl_events_lost' } as const;

/** A DatapathEvent from a record, or undefined for a type this release does not know (a newer object's). */
export function datapathEvent(r: EventRecord): DatapathEvent | undefined {
  const type = (EVENT_TYPES as Record<number, DatapathEvent['type'] | undefined>)[r.type];
  if (!type) return undefined;
  const reason = r.reason === 0 ? '' : ((EVENT_REASONS as Record<number, string | undefined>)[r.reason] ?? `reason-${r.reason}`);
  return {
    tsNs: r.tsNs,
    netnsCookie: r.netnsCookie,
    sockCookie: r.sockCookie,
    type,
    reason,
    proto: r.proto === IPPROTO_UDP ? 'udp' : 'tcp',
    mode: r.mode === MODE.sidecar ? 'sidecar' : r.mode === MODE.ambient ? 'ambient' : '',
    src: r.src,
    srcPort: r.srcPort,
    dst: r.dst,
    dstPort: r.dstPort,
    to: r.to,
    toPort: r.toPort,
    errno: r.err,
  };
}

function openGate(pinDir: string): BpfMap<number, number> {
  return BpfMap.openPinned(path.join(pinDir, EVENT_MAPS.gate), u32Codec, u32Codec);
}

/**
 * Closes the gate a monitor left open (an agent killed while one was attached): the agent calls it
 * at start. Returns whether it was open; a pin dir without the gate (not installed yet) is fine.
 */
export function closeEventGate(pinDir: string): boolean {
  if (!fs.existsSync(path.join(pinDir, EVENT_MAPS.gate))) return false;
  const gate = openGate(pinDir);
  try {
    const open = gate.get(0) === 1;
    if (open) gate.set(0, 0);
    return open;
  } finally {
    gate.close();
  }
}

/** How often a started feed drains the ring, in ms: the longest an event waits at a low rate. */
export const EVENT_DRAIN_MS = 50;

export interface PinnedEventFeedOptions {
  /** drain the ring this often while started, in ms; 0: only when the programs wake the reader. Default EVENT_DRAIN_MS */
  drainEveryMs?: number;
}

/** The EventFeed over the maps pinned under pinDir (the agent's bpf-pin-dir). */
export class PinnedEventFeed implements EventFeed {
  private running: { gate: BpfMap<number, number>; ringFd: number; reader: RingReader; timer?: NodeJS.Timeout } | undefined;
  private lostMap: BpfMap<number, bigint> | undefined;
  /** sl_events_lost when this feed first read it: lost() counts from there */
  private lostBase = 0n;

  constructor(
    private readonly pinDir: string,
    private readonly opts: PinnedEventFeedOptions = {},
  ) {}

  start(onEvent: (e: DatapathEvent) => void): void {
    if (this.running) return;
    this.lost(); // the baseline, before any event can be lost on our watch
    const gate = openGate(this.pinDir);
    let ringFd = -1;
    try {
      const ringPin = path.join(this.pinDir, EVENT_MAPS.ring);
      ringFd = checkErrno(loadShim().objGet(ringPin), `open pinned map ${ringPin}`);
      let live = false;
      const reader = new RingReader(ringFd, (rec) => {
        if (!live) return;
        const e = datapathEvent(eventCodec.decode(rec, 0));
        if (e) onEvent(e);
      });
      this.running = { gate, ringFd, reader };
      // what an earlier monitor left unread is not this one's
      reader.drain();
      live = true;
      gate.set(0, 1);
      const every = this.opts.drainEveryMs ?? EVENT_DRAIN_MS;
      if (every > 0) {
        // below the wake-up threshold the programs do not wake the reader: this bounds an event's wait
        const timer = setInterval(() => reader.drain(), every);
        timer.unref(); // the reader's watch keeps the process alive, not the timer
        this.running.timer = timer;
      }
    } catch (e) {
      this.running?.reader.close();
      this.running = undefined;
      if (ringFd >= 0) loadShim().close(ringFd);
      gate.close();
      throw e;
    }
  }

  stop(): void {
    const r = this.running;
    if (!r) return;
    this.running = undefined;
    clearInterval(r.timer);
    try {
      r.gate.set(0, 0);
    } finally {
      r.reader.close();
      loadShim().close(r.ringFd);
      r.gate.close();
    }
  }

  lost(): bigint {
    if (!this.lostMap) {
      this.lostMap = BpfMap.openPinned(path.join(this.pinDir, EVENT_MAPS.lost), u32Codec, perCpuU64Codec(possibleCpus()));
      this.lostBase = this.lostMap.get(0) ?? 0n;
    }
    return (this.lostMap.get(0) ?? 0n) - this.lostBase;
  }

  /** Stops, and releases the counter map too. */
  close(): void {
    this.stop();
    this.lostMap?.close();
    this.lostMap = undefined;
  }
}
