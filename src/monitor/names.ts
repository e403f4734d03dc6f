/* Names for the addresses of monitored events, from what the agent already holds: its pod
 * registrations (netns cookie and IPs of this node's pods), the Pod objects it follows (IPs of
 * pods elsewhere, where the source lists them) and the Services (frontends, named as the LB model
 * names them). The indexes exist only while a monitor is attached (open → close), so an agent
 * nobody watches pays nothing for them.
 */
import type { PodRegistration } from '../agent/pod-registry';
import type { ChangeEvent, ObjectStore } from '../k8s/store';
import type { Pod, Service } from '../k8s/types';
import { objectKey } from '../k8s/validate';
import { canonicalIp, computeFrontends, NODE_PORT_ADDRESS } from '../lb/model';
import { frontendId } from '../lb/sync';
import type { EventNames } from './record';
import type { DatapathEvent } from './types';

/** What the monitor hub needs of a resolver. */
export interface EventNamer {
  /** start following the sources (the first monitor attached) */
  open(): void;
  /** drop every index (the last monitor left) */
  close(): void;
  resolve(e: DatapathEvent): EventNames;
}

export interface NameSources {
  /** the agent's pod registrations; `generation` tells when list() changed */
  registry: { list(): readonly PodRegistration[]; readonly generation: number };
  /** the cluster objects the agent follows (Services, Pods) */
  store: ObjectStore;
  /** the node's own network namespace: its sockets are `host` */
  hostNetnsCookie: bigint;
}

/** A lookup table filled per owning object, whose entries are replaced or removed together. */
class OwnedIndex {
  private readonly byKey = new Map<string, { owner: string; name: string }>();
  private readonly keysOf = new Map<string, string[]>();

  /** Replaces the owner's entries; a key another owner holds stays the other's. */
  set(owner: string, entries: ReadonlyArray<readonly [string, string]>): void {
    this.delete(owner);
    const keys: string[] = [];
    for (const [key, name] of entries) {
      if (this.byKey.has(key)) continue;
      this.byKey.set(key, { owner, name });
      keys.push(key);
    }
    if (keys.length) this.keysOf.set(owner, keys);
  }

  delete(owner: string): void {
    for (const key of this.keysOf.get(owner) ?? []) this.byKey.delete(key);
    this.keysOf.delete(owner);
  }

  get(key: string): string | undefined {
    return this.byKey.get(key)?.name;
  }

  clear(): void {
    this.byKey.clear();
    this.keysOf.clear();
  }
}

/** `namespace/name:port name`, or the port number for an unnamed port (never a pod's name). */
function serviceEntries(svc: Service): Array<[string, string]> {
  // the tracker warns about bad Services already; frontends only need the Service itself
  return computeFrontends([svc], [], { warn: () => undefined }).map((f) => [f.id, `${f.service}:${f.portName || f.port}`]);
}

function podEntries(pod: Pod): Array<[string, string]> {
  // a hostNetwork pod's IP is the node's
  if (pod.spec?.hostNetwork) return [];
  const name = `${pod.metadata.namespace}/${pod.metadata.name}`;
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).concat(pod.status?.podIP ?? []);
  return [...new Set(ips.map(ipKey).filter((ip) => ip !== ''))].map((ip) => [ip, name]);
}

/** An address as the indexes key it: canonical, IPv4-mapped IPv6 as IPv4; '' when not an address. */
function ipKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return canonicalIp(mapped ? mapped[1] : ip)?.ip ?? '';
}

export class MonitorNames implements EventNamer {
  private readonly services = new OwnedIndex();
  private readonly podIps = new OwnedIndex();
  private registered?: { generation: number; byCookie: Map<string, string>; byIp: Map<string, string> };
  private following?: (ev: ChangeEvent) => void;

  constructor(private readonly sources: NameSources) {}

  open(): void {
    if (this.following) return;
    const { store } = this.sources;
    this.following = (ev) => this.changed(ev);
    store.on('change', this.following);
    for (const svc of store.list('Service')) this.services.set(objectKey(svc), serviceEntries(svc));
    for (const pod of store.list('Pod')) this.podIps.set(objectKey(pod), podEntries(pod));
  }

  close(): void {
    if (this.following) this.sources.store.off('change', this.following);
    this.following = undefined;
    this.services.clear();
    this.podIps.clear();
    this.registered = undefined;
  }

  private changed(ev: ChangeEvent): void {
    if (ev.kind === 'Service') {
      if (ev.obj) this.services.set(ev.key, serviceEntries(ev.obj as Service));
      else this.services.delete(ev.key);
    } else if (ev.kind === 'Pod') {
      if (ev.obj) this.podIps.set(ev.key, podEntries(ev.obj as Pod));
      else this.podIps.delete(ev.key);
    }
  }

  /** The registrations by netns cookie and by IP, rebuilt when the registry changed. */
  private registrations(): NonNullable<MonitorNames['registered']> {
    const generation = this.sources.registry.generation;
    if (this.registered?.generation === generation) return this.registered;
    const byCookie = new Map<string, string>();
    const byIp = new Map<string, string>();
    for (const ep of this.sources.registry.list()) {
      const name = ep.namespace || ep.name ? `${ep.namespace}/${ep.name}` : `container:${ep.containerId.slice(0, 12)}`;
      byCookie.set(ep.netnsCookie, name);
      for (const ip of ep.ips) if (ipKey(ip)) byIp.set(ipKey(ip), name);
    }
    this.registered = { generation, byCookie, byIp };
    return this.registered;
  }

  /** The pod of a network namespace: `host` for the node's own; '' when unknown. */
  pod(netnsCookie: bigint): string {
    if (netnsCookie === this.sources.hostNetnsCookie) return 'host';
    return this.registrations().byCookie.get(netnsCookie.toString()) ?? '';
  }

  /** The pod an address belongs to: this node's registrations first, then the Pod objects. */
  podOfIp(ip: string): string {
    const key = ipKey(ip);
    if (!key) return '';
    return this.registrations().byIp.get(key) ?? this.podIps.get(key) ?? '';
  }

  /**
   * The Service port a frontend address belongs to. `nodePort`: the address may be any of the
   * node's (the datapath translated it as a nodePort): its port names the frontend.
   */
  service(ip: string, port: number, proto: 'tcp' | 'udp', opts: { nodePort?: boolean } = {}): string {
    const key = ipKey(ip);
    if (!key) return '';
    const P = proto.toUpperCase();
    const exact = this.services.get(frontendId(key, port, P));
    if (exact || !opts.nodePort) return exact ?? '';
    return this.services.get(frontendId(NODE_PORT_ADDRESS[key.includes(':') ? 6 : 4], port, P)) ?? '';
  }

  resolve(e: DatapathEvent): EventNames {
    // only a socket-LB decision says its destination was a frontend: then a node address on a
    // port is that nodePort's Service
    const lb = e.type === 'lb-translate' || e.type === 'lb-refuse';
    return {
      pod: this.pod(e.netnsCookie),
      srcName: e.src ? this.podOfIp(e.src) : '',
      dstName: e.dst ? this.service(e.dst, e.dstPort, e.proto, { nodePort: lb }) || this.podOfIp(e.dst) : '',
      toName: e.to ? this.podOfIp(e.to) : '',
    };
  }
}
