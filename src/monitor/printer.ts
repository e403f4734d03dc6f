/* How `sluice monitor` prints what the agent streams: one line per event, hubble-like text or
 * (`-o json`) the event's record as JSON with its wall-clock time.
 */
import * as os from 'node:os';
import type { MonitorMessage } from './record';

/**
 * Turns the kernel's timestamps into wall-clock time. bpf_ktime_get_ns() is CLOCK_MONOTONIC, and
 * so is process.hrtime (libuv reads CLOCK_MONOTONIC on Linux), in every process of the machine:
 * the difference to Date.now(), read once, maps one onto the other. Read once, so lines keep the
 * kernel's order even if the wall clock is stepped meanwhile; NTP's slewing moves them by
 * milliseconds a day at most.
 */
export function monotonicToWall(nowMs = Date.now(), monoNowNs = process.hrtime.bigint()): (tsNs: bigint) => Date {
  const offsetNs = BigInt(nowMs) * 1_000_000n - monoNowNs;
  return (tsNs) => new Date(Number((tsNs + offsetNs) / 1_000_000n));
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `errno ${n}`;
}

/** `ip:port` (IPv6 in brackets; no port when 0), `?` for an unknown address, then its name. */
function hostPort(ip: string, port: number, name: string): string {
  const addr = !ip ? '?' : !port ? ip : ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
  return name ? `${addr} (${name})` : addr;
}

const TYPE_WIDTH = 'sock-destroy'.length;

const LOST_WHY = { ring: 'the ring buffer was full', queue: 'this monitor read too slowly' } as const;

/**
 * One line of text, e.g.
 * `2026-12-04T05:31:02.123Z default/client lb-refuse    10.244.0.5 -> 10.96.0.11:80 (default/empty:http) tcp ECONNREFUSED (no-backend)`
 * @param wall the event's time (monotonicToWall); a lost notice is stamped with `now`
 */
export function formatText(m: MonitorMessage, wall: (tsNs: bigint) => Date, now = new Date()): string {
  if ('lost' in m) return `${now.toISOString()} LOST ${m.lost.count} events: ${LOST_WHY[m.lost.reason]}`;
  const e = m.event;
  // the pod is named once, in its column: its own addresses (an outbound socket's source, an
  // inbound connection's destination) go unnamed
  const other = (name: string) => (name === e.pod ? '' : name);
  const parts = [
    wall(BigInt(e.tsNs)).toISOString(),
    e.pod || `netns:${e.netnsCookie}`,
    e.type.padEnd(TYPE_WIDTH),
    hostPort(e.src, e.srcPort, other(e.srcName)),
    '->',
    hostPort(e.dst, e.dstPort, other(e.dstName)),
  ];
  if (e.to) parts.push('=>', hostPort(e.to, e.toPort, other(e.toName)));
  parts.push(e.proto);
  if (e.mode) parts.push(e.mode);
  if (e.errno) parts.push(errnoName(e.errno));
  if (e.reason) parts.push(`(${e.reason})`);
  return parts.join(' ');
}

/**
 * One JSON object: an event's every field, its resolved names and `time` (ISO, UTC); a lost notice
 * as `{"type":"lost","reason":"ring"|"queue","count":n,"time":…}`, so every line has a `type`.
 */
export function formatJson(m: MonitorMessage, wall: (tsNs: bigint) => Date, now = new Date()): string {
  if ('lost' in m) return JSON.stringify({ type: 'lost', ...m.lost, time: now.toISOString() });
  return JSON.stringify({ time: wall(BigInt(m.event.tsNs)).toISOString(), ...m.event });
}
