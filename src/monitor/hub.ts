/* Who is watching the datapath's decisions. The feed (and with it the kernel's gate) runs only
 * while at least one monitor is subscribed: the programs emit nothing nobody reads. Each event is
 * named once and handed to every subscriber whose filter it passes. A subscriber that reads too
 * slowly has a bounded queue: what does not fit is dropped and counted, and the subscriber is
 * told how many it missed at the point it missed them (as `cilium monitor` prints lost events).
 */
import { log } from '../log';
import { matches, type MonitorFilter } from './filter';
import type { EventNamer } from './names';
import { eventRecord, type EventRecord, type LostReason, type MonitorMessage } from './record';
import type { DatapathEvent, EventFeed } from './types';

export interface MonitorHubOptions {
  /** messages a subscriber may have waiting before new events are dropped for it. Default 4096 */
  queueLimit?: number;
  /** how often the feed's lost count is read while a monitor is attached, in ms. Default 1000 */
  lostCheckMs?: number;
  /** told of lost events: the ring's once for all subscribers, a queue's per subscriber */
  onLost?: (reason: LostReason, count: number) => void;
}

/** Who reads a subscription: told when messages wait and when the hub let it go. */
export interface MonitorReader {
  /** messages were queued: read them with next() */
  ready(): void;
  /** the subscription ended (the client left, or the agent stops): nothing more will come */
  closed(): void;
}

const DEFAULT_QUEUE_LIMIT = 4096;
const DEFAULT_LOST_CHECK_MS = 1000;

/** One attached monitor: its filter and the messages waiting for it. */
export class Subscription {
  private readonly queue: MonitorMessage[] = [];
  /** events dropped since the last lost notice was queued */
  private missed = 0;
  private closed = false;

  constructor(
    readonly filter: MonitorFilter,
    private readonly limit: number,
    private readonly reader: MonitorReader,
    private readonly leave: (s: Subscription) => void,
  ) {}

  /** Queues an event; false when it was dropped (the queue is full). */
  offer(rec: EventRecord): boolean {
    if (this.queue.length >= this.limit) {
      this.missed++;
      return false;
    }
    // the notice goes where the gap is: after what was queued before the drops
    if (this.missed) this.queue.push({ lost: { reason: 'queue', count: this.missed } });
    this.missed = 0;
    this.queue.push({ event: rec });
    this.reader.ready();
    return true;
  }

  /** Queues a notice of events the ring lost (beyond the limit: it is what the reader must know). */
  ringLost(count: number): void {
    const last = this.queue[this.queue.length - 1];
    if (last && 'lost' in last && last.lost.reason === 'ring') last.lost.count += count;
    else this.queue.push({ lost: { reason: 'ring', count } });
    this.reader.ready();
  }

  /** The next message to send, undefined when none waits. */
  next(): MonitorMessage | undefined {
    const m = this.queue.shift();
    if (m || !this.missed) return m;
    const lost: MonitorMessage = { lost: { reason: 'queue', count: this.missed } };
    this.missed = 0;
    return lost;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** Leaves the hub; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.leave(this);
    this.reader.closed();
  }
}

export class MonitorHub {
  private readonly subs = new Set<Subscription>();
  private feed?: EventFeed;
  private lostSeen = 0n;
  private lostTimer?: NodeJS.Timeout;
  private readonly queueLimit: number;
  private readonly lostCheckMs: number;

  /**
   * @param createFeed called when the first monitor attaches, once; the feed is kept for the
   *   agent's life (its lost count runs from its creation)
   */
  constructor(
    private readonly createFeed: () => EventFeed,
    private readonly names: EventNamer,
    private readonly opts: MonitorHubOptions = {},
  ) {
    this.queueLimit = opts.queueLimit ?? DEFAULT_QUEUE_LIMIT;
    this.lostCheckMs = opts.lostCheckMs ?? DEFAULT_LOST_CHECK_MS;
  }

  /** Monitors attached now. */
  get subscribers(): number {
    return this.subs.size;
  }

  /**
   * Attaches a monitor; the first one starts the feed.
   * @throws when the feed cannot be created or started (nothing stays attached then)
   */
  subscribe(filter: MonitorFilter, reader: MonitorReader): Subscription {
    const sub = new Subscription(filter, this.queueLimit, reader, (s) => this.leave(s));
    this.subs.add(sub);
    if (this.subs.size === 1) {
      try {
        this.start();
      } catch (e) {
        this.subs.delete(sub);
        throw e;
      }
    }
    return sub;
  }

  private start(): void {
    this.names.open();
    try {
      this.feed ??= this.createFeed();
      this.lostSeen = this.feed.lost();
      this.feed.start((e) => this.publish(e));
    } catch (e) {
      this.names.close();
      throw e;
    }
    this.lostTimer = setInterval(() => this.checkLost(), this.lostCheckMs);
    this.lostTimer.unref();
    log.info('monitor attached: datapath events on');
  }

  private leave(sub: Subscription): void {
    if (!this.subs.delete(sub) || this.subs.size > 0) return;
    this.stop();
    log.info('last monitor left: datapath events off');
  }

  private stop(): void {
    clearInterval(this.lostTimer);
    this.lostTimer = undefined;
    this.feed?.stop();
    this.names.close();
  }

  private publish(e: DatapathEvent): void {
    if (this.subs.size === 0) return; // delivered after stop
    let rec: EventRecord;
    try {
      rec = eventRecord(e, this.names.resolve(e));
    } catch (err) {
      // the feed calls this from the ring's reader: one event that cannot be named must not stop it
      log.warn('monitor: event not named', { type: e.type, err });
      return;
    }
    for (const sub of this.subs) {
      if (matches(sub.filter, rec) && !sub.offer(rec)) this.opts.onLost?.('queue', 1);
    }
  }

  /** Events the ring lost since the last look are every subscriber's loss. */
  private checkLost(): void {
    if (!this.feed || this.subs.size === 0) return;
    const now = this.feed.lost();
    const grown = Number(now - this.lostSeen);
    this.lostSeen = now;
    if (grown <= 0) return;
    this.opts.onLost?.('ring', grown);
    for (const sub of this.subs) sub.ringLost(grown);
  }

  /** Detaches every monitor and stops the feed (the agent stops). */
  close(): void {
    for (const sub of [...this.subs]) sub.close();
  }
}
