/* Pods that started before the agent (sluice installed on a running node): no CNI ADD ever
 * registered them. repair-mode decides what happens, as istio-cni's repair controller does:
 *  - repair (default): find the pod's network namespace from /proc (hostPID) by its IP, register
 *    it, enrol it in place, and hand its proxy's existing listeners to the datapath (they were
 *    opened before sluice's sockops program could see them) — no restart;
 *  - label: label the pod (cni.istio.io/uninitialized=true, Istio's repair label);
 *  - delete: delete it, so it is recreated through the CNI chain (needs the opt-in RBAC overlay);
 *  - off: nothing.
 * Only processes under cgroup-root are considered: the programs act on nothing else anyway.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfError, netnsCookieOf } from '../bpf';
import { PROXY_PORT } from '../bpf/constants';
import { listenerKeyCodec } from '../bpf/layout';
import { loadShim } from '../bpf/shim';
import type { Config } from '../config';
import { pidsUnder } from '../cgroup-pids';
import { cgroup2Mount } from '../config';
import type { ApiClient } from '../k8s/api-client';
import type { ObjectStore } from '../k8s/store';
import { canonicalIp } from '../lb/model';
import type { Pod } from '../k8s/types';
import { log } from '../log';
import type { PodRegistration, PodRegistry } from './pod-registry';

export const REPAIR_LABEL = { key: 'cni.istio.io/uninitialized', value: 'true' };
/** the proxy ports whose listeners the datapath steers to (sockops would have registered them) */
const PROXY_LISTEN_PORTS = new Set<number>(Object.values(PROXY_PORT));

interface NetnsInfo {
  ino: number;
  pids: number[];
  /** a path that names the namespace (a runtime's mount when there is one, else /proc/<pid>/ns/net) */
  path: string;
}

/** Network namespaces of the processes under cgroupRoot, by inode. */
export function namespacesUnder(cgroupRoot: string, mount = cgroup2Mount()): Map<number, NetnsInfo> {
  const self = fs.statSync('/proc/self/ns/net').ino;
  const out = new Map<number, NetnsInfo>();
  for (const pid of pidsUnder(cgroupRoot, mount)) {
    try {
      const ino = fs.statSync(`/proc/${pid}/ns/net`).ino;
      if (ino === self) continue;
      const info = out.get(ino) ?? { ino, pids: [], path: `/proc/${pid}/ns/net` };
      info.pids.push(pid);
      out.set(ino, info);
    } catch {
      /* the process ended while we looked */
    }
  }
  // prefer a runtime's bind mount: it outlives any one process
  for (const dir of ['/var/run/netns', '/run/netns']) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        const info = out.get(fs.statSync(path.join(dir, n)).ino);
        if (info) info.path = path.join(dir, n);
      } catch {
        /* a stale mount point */
      }
    }
  }
  return out;
}

/**
 * The local addresses of a network namespace, read through a process in it: /proc/<pid>/net is
 * that namespace's view (fib_trie's "/32 host LOCAL" entries for IPv4, if_inet6 for IPv6), so no
 * process needs to enter it (repairing 100 pods spawns nothing).
 */
function addressesIn(pid: number): string[] {
  const out = new Set<string>();
  const trie = fs.readFileSync(`/proc/${pid}/net/fib_trie`, 'utf8').split('\n');
  for (let i = 1; i < trie.length; i++) {
    if (!/\/32 host LOCAL/.test(trie[i])) continue;
    const m = /\|-- (\d+\.\d+\.\d+\.\d+)/.exec(trie[i - 1]);
    if (m && !m[1].startsWith('127.')) out.add(m[1]);
  }
  for (const line of fs.readFileSync(`/proc/${pid}/net/if_inet6`, 'utf8').split('\n')) {
    const [hex, , , scope] = line.trim().split(/\s+/);
    if (hex?.length !== 32 || scope !== '00') continue; // global scope only
    out.add(canonicalIp(hex.match(/.{4}/g)!.join(':'))?.ip ?? '');
  }
  out.delete('');
  return [...out];
}

function hexAddrToPort(field: string): number {
  return parseInt(field.split(':')[1], 16);
}

/** Listening sockets on the proxy ports in a namespace: (pid, fd, port, family) of each. */
function proxyListeners(ns: NetnsInfo): Array<{ pid: number; fd: number; port: number; family: 4 | 6 }> {
  const byInode = new Map<string, { port: number; family: 4 | 6 }>();
  for (const [file, family] of [
    ['tcp', 4],
    ['tcp6', 6],
  ] as const) {
    let text = '';
    try {
      text = fs.readFileSync(`/proc/${ns.pids[0]}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // LISTEN
      const port = hexAddrToPort(f[1]);
      if (PROXY_LISTEN_PORTS.has(port)) byInode.set(f[9], { port, family });
    }
  }
  const out: Array<{ pid: number; fd: number; port: number; family: 4 | 6 }> = [];
  for (const pid of ns.pids) {
    let fds: string[] = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        const l = m && byInode.get(m[1]);
        if (l) {
          out.push({ pid, fd: Number(fd), ...l });
          byInode.delete(m![1]);
        }
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

export interface RepairDeps {
  cfg: Config;
  store: ObjectStore;
  registry: PodRegistry;
  /** decides and applies the pod's capture (the mesh controller) */
  enrol(reg: PodRegistration): { mode: string };
  api?: ApiClient;
  /** pods (namespace/name) already labelled or deleted: not acted on again; updated here */
  acted?: Set<string>;
  /** pods whose network namespace was not found, with when: retried after `retryMissedMs` */
  missed?: Map<string, number>;
  retryMissedMs?: number;
}

export interface RepairReport {
  candidates: number;
  ms: number;
  repaired: string[];
  labelled: string[];
  deleted: string[];
  notFound: string[];
  listeners: number;
}

function podIps(p: Pod): string[] {
  const ips = (p.status?.podIPs ?? []).map((x) => x.ip).filter(Boolean);
  return ips.length ? ips : p.status?.podIP ? [p.status.podIP] : [];
}

/** Finds this node's running pods that no CNI ADD registered, and acts per repair-mode. */
export async function repairPods(d: RepairDeps): Promise<RepairReport> {
  const t0 = Date.now();
  const report: RepairReport = { candidates: 0, ms: 0, repaired: [], labelled: [], deleted: [], notFound: [], listeners: 0 };
  if (d.cfg.repairMode === 'off') return report;
  const registered = new Set(d.registry.list().map((e) => `${e.namespace}/${e.name}`));
  const candidates = d.store
    .list('Pod')
    .filter((p) => p.spec?.nodeName === d.cfg.nodeName && !p.spec?.hostNetwork && podIps(p).length > 0)
    .filter((p) => !registered.has(`${p.metadata.namespace}/${p.metadata.name}`))
    // pods sluice never captures are not relabelled or deleted (they start without the agent too)
    .filter((p) => d.cfg.repairMode === 'repair' || !d.cfg.excludeNamespaces.includes(p.metadata.namespace))
    .filter((p) => !d.acted?.has(`${p.metadata.namespace}/${p.metadata.name}`))
    .filter(
      (p) => Date.now() - (d.missed?.get(`${p.metadata.namespace}/${p.metadata.name}`) ?? -Infinity) >= (d.retryMissedMs ?? 0),
    );
  report.candidates = candidates.length;
  if (candidates.length === 0) return report;
  let namespaces: Map<number, NetnsInfo> | undefined;
  const byIp = new Map<string, NetnsInfo>();
  for (const pod of candidates) {
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    const podPath = `/api/v1/namespaces/${encodeURIComponent(pod.metadata.namespace)}/pods/${encodeURIComponent(pod.metadata.name)}`;
    try {
      if (d.cfg.repairMode === 'label') {
        if (!d.api) throw new Error('repair-mode label needs the API server');
        await d.api.request(
          'PATCH',
          podPath,
          { metadata: { labels: { [REPAIR_LABEL.key]: REPAIR_LABEL.value } } },
          { contentType: 'application/merge-patch+json' },
        );
        report.labelled.push(key);
        d.acted?.add(key);
        log.info('pod predates the agent: labelled', { pod: key, label: `${REPAIR_LABEL.key}=${REPAIR_LABEL.value}` });
        continue;
      }
      if (d.cfg.repairMode === 'delete') {
        if (!d.api) throw new Error('repair-mode delete needs the API server');
        await d.api.request('DELETE', podPath);
        report.deleted.push(key);
        d.acted?.add(key);
        log.info('pod predates the agent: deleted, to be recreated through the CNI chain', { pod: key });
        continue;
      }
      if (!namespaces) {
        namespaces = namespacesUnder(d.cfg.cgroupRoot);
        for (const ns of namespaces.values()) {
          try {
            for (const ip of addressesIn(ns.pids[0])) byIp.set(ip, ns);
          } catch (e) {
            log.debug('cannot list addresses of a namespace', { netns: ns.path, err: (e as Error).message });
          }
        }
      }
      const ips = podIps(pod);
      const ns = ips.map((ip) => byIp.get(ip)).find(Boolean);
      if (!ns) {
        report.notFound.push(key);
        d.missed?.set(key, Date.now());
        log.warn('pod predates the agent, but no network namespace under cgroup-root has its IP', { pod: key, ips });
        continue;
      }
      const reg: PodRegistration = {
        containerId: `repair-${pod.metadata.uid ?? key.replace('/', '-')}`,
        ifName: 'eth0',
        namespace: pod.metadata.namespace,
        name: pod.metadata.name,
        uid: pod.metadata.uid ?? '',
        ips,
        netnsCookie: netnsCookieOf(ns.path).toString(),
        netnsPath: ns.path,
        network: 'repaired',
        createdAt: new Date().toISOString(),
      };
      d.registry.put(reg);
      d.missed?.delete(key);
      const decided = d.enrol(reg);
      // only a captured pod's proxy listeners matter (reading /proc/<pid>/net/tcp walks the
      // kernel's whole TCP hash, ~3 ms a file here: not for every plain pod)
      if (decided.mode !== 'none') {
        report.listeners += adoptListeners(d.cfg.bpfPinDir, ns, BigInt(reg.netnsCookie));
      }
      report.repaired.push(key);
      log.info('pod predates the agent: registered and enrolled in place', {
        pod: key,
        netns: ns.path,
        netnsCookie: reg.netnsCookie,
      });
    } catch (e) {
      log.warn('repair failed', { pod: key, mode: d.cfg.repairMode, err: (e as Error).message });
    }
  }
  report.ms = Date.now() - t0;
  return report;
}

/** Hands listeners the proxy opened before sluice could see them to sl_listeners (pidfd_getfd). */
function adoptListeners(pinDir: string, ns: NetnsInfo, cookie: bigint): number {
  const s = loadShim();
  const fd = s.objGet(path.join(pinDir, 'sl_listeners'));
  if (fd < 0) throw new BpfError('open sl_listeners', -fd);
  let n = 0;
  try {
    const key = Buffer.alloc(listenerKeyCodec.size);
    for (const l of proxyListeners(ns)) {
      listenerKeyCodec.encode({ netnsCookie: cookie, port: l.port, family: l.family, slot: 0 }, key, 0);
      const ret = s.sockhashAddFromPid(fd, key, l.pid, l.fd);
      if (ret < 0) log.warn('cannot adopt an existing listener', { pid: l.pid, port: l.port, err: s.lastError() });
      else n++;
    }
  } finally {
    s.close(fd);
  }
  return n;
}
