/* Kernel checks: the version, and each feature sluice needs probed by asking the kernel (a
 * program type that loads, a helper the verifier accepts, a kfunc in the kernel's BTF), each
 * naming the kernel that brought it; cgroup2 under cgroup-root and bpffs under bpf-pin-dir.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { netnsCookieSelf } from '../bpf';
import { probeFeature, type KernelFeature } from '../bpf/introspect';
import type { Config } from '../config';
import { fail, ok, warn, type CheckResult } from './report';

/** A probe's answer: present, absent, or the probe itself failed (its message). */
export type ProbeResult = boolean | { error: string };

export interface KernelFacts {
  /** uname -r */
  release: string;
  features: Record<KernelFeature | 'netns_cookie', ProbeResult>;
  cgroupRoot: PathMount;
  pinDir: PathMount;
}

export interface PathMount {
  path: string;
  exists: boolean;
  /** the file system type of the mount holding the path (the longest mount point above it) */
  fstype?: string;
  mountPoint?: string;
}

/** The mount holding path, from /proc/mounts text (mount points with spaces are \040-escaped). */
export function mountFor(path: string, mounts: string): { mountPoint: string; fstype: string } | undefined {
  let best: { mountPoint: string; fstype: string } | undefined;
  for (const line of mounts.split('\n')) {
    const [, rawMnt, fstype] = line.split(' ');
    if (!rawMnt || !fstype) continue;
    const mnt = rawMnt.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const under = path === mnt || path.startsWith(mnt.endsWith('/') ? mnt : mnt + '/');
    // a later mount on the same point hides an earlier one
    if (under && (!best || mnt.length >= best.mountPoint.length)) best = { mountPoint: mnt, fstype };
  }
  return best;
}

function pathMount(path: string, mounts: string): PathMount {
  let real = path;
  try {
    real = fs.realpathSync(path);
  } catch {
    return { path, exists: false };
  }
  const m = mountFor(real, mounts);
  return { path, exists: true, fstype: m?.fstype, mountPoint: m?.mountPoint };
}

function probe(run: () => boolean): ProbeResult {
  try {
    return run();
  } catch (e) {
    return { error: (e as Error).message };
  }
}

export function gatherKernelFacts(cfg: Config): KernelFacts {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8');
  return {
    release: os.release(),
    features: {
      btf: probe(() => probeFeature('btf')),
      sk_lookup: probe(() => probeFeature('sk_lookup')),
      set_retval: probe(() => probeFeature('set_retval')),
      tcx: probe(() => probeFeature('tcx')),
      sock_destroy: probe(() => probeFeature('sock_destroy')),
      netns_cookie: probe(() => {
        netnsCookieSelf();
        return true;
      }),
    },
    cgroupRoot: pathMount(cfg.cgroupRoot, mounts),
    pinDir: pathMount(cfg.bpfPinDir, mounts),
  };
}

/** [major, minor] of a kernel release string such as "6.18.44-fc-v1252"; undefined if unparsable. */
export function kernelVersion(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

const MIN_KERNEL: [number, number] = [5, 18];

interface FeatureSpec {
  what: string;
  since: string;
  /** absent: fail (sluice cannot run) or warn (one capability is missing) */
  absent: 'fail' | 'warn';
  consequence: string;
}

const FEATURES: Record<KernelFeature | 'netns_cookie', FeatureSpec> = {
  btf: {
    what: 'kernel BTF (/sys/kernel/btf/vmlinux)',
    since: '5.18 built with CONFIG_DEBUG_INFO_BTF',
    absent: 'fail',
    consequence: 'the programs cannot be loaded',
  },
  netns_cookie: {
    what: 'network-namespace cookies (SO_NETNS_COOKIE)',
    since: '5.14',
    absent: 'fail',
    consequence: 'pods cannot be identified in the kernel',
  },
  set_retval: {
    what: 'bpf_set_retval in cgroup sock_addr programs',
    since: '5.18',
    absent: 'fail',
    consequence: 'the socket-LB programs do not load (they refuse connects to Services without endpoints with it)',
  },
  sk_lookup: { what: 'sk_lookup programs', since: '5.9', absent: 'fail', consequence: 'inbound capture does not load' },
  tcx: {
    what: 'tcx links',
    since: '6.6',
    absent: 'warn',
    consequence: "ambient pods cannot be enrolled (ztunnel's source-preserving inbound needs a tcx program on the pod's lo)",
  },
  sock_destroy: {
    what: 'the bpf_sock_destroy kfunc',
    since: '6.5',
    absent: 'warn',
    consequence: 'sockets connected to a backend that went away cannot be terminated from the kernel',
  },
};

export function judgeKernel(f: KernelFacts): CheckResult[] {
  const out: CheckResult[] = [];
  const v = kernelVersion(f.release);
  if (!v) out.push(warn('kernel.version', `cannot parse the kernel release "${f.release}"; the feature probes below decide`));
  else if (v[0] < MIN_KERNEL[0] || (v[0] === MIN_KERNEL[0] && v[1] < MIN_KERNEL[1])) {
    out.push(
      fail(
        'kernel.version',
        `Linux ${f.release}: sluice needs Linux ≥ ${MIN_KERNEL.join('.')}`,
        `run the node on Linux ≥ ${MIN_KERNEL.join('.')} with BTF`,
      ),
    );
  } else out.push(ok('kernel.version', `Linux ${f.release} (sluice needs ≥ ${MIN_KERNEL.join('.')})`));

  for (const [name, spec] of Object.entries(FEATURES) as Array<[keyof typeof FEATURES, FeatureSpec]>) {
    const r = f.features[name];
    const id = `kernel.${name}`;
    if (r === true) out.push(ok(id, `${spec.what} present (Linux ≥ ${spec.since})`));
    else if (r === false) {
      const msg = `${spec.what} absent (needs Linux ≥ ${spec.since}): ${spec.consequence}`;
      const fix = `run the node on Linux ≥ ${spec.since}`;
      out.push(spec.absent === 'fail' ? fail(id, msg, fix) : warn(id, msg, fix));
    } else
      out.push(
        warn(id, `cannot probe ${spec.what}: ${r.error}`, 'run sluice doctor as root (CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN)'),
      );
  }

  const cg = f.cgroupRoot;
  if (!cg.exists)
    out.push(
      fail(
        'kernel.cgroup2',
        `cgroup-root ${cg.path} does not exist`,
        'set cgroup-root to the cgroup2 mount (or a cgroup under it)',
      ),
    );
  else if (cg.fstype !== 'cgroup2') {
    out.push(
      fail(
        'kernel.cgroup2',
        `cgroup-root ${cg.path} is on ${cg.fstype ?? 'an unknown file system'} (mount ${cg.mountPoint ?? '?'}), not cgroup2`,
        'mount cgroup2 (unified hierarchy) and point cgroup-root at it',
      ),
    );
  } else out.push(ok('kernel.cgroup2', `cgroup-root ${cg.path} is on cgroup2 (mount ${cg.mountPoint})`));

  const pin = f.pinDir;
  if (!pin.exists)
    out.push(
      fail(
        'kernel.bpffs',
        `bpf-pin-dir ${pin.path} does not exist: nothing is pinned (the agent never started here)`,
        'start the agent',
      ),
    );
  else if (pin.fstype !== 'bpf') {
    out.push(
      fail(
        'kernel.bpffs',
        `bpf-pin-dir ${pin.path} is on ${pin.fstype ?? 'an unknown file system'} (mount ${pin.mountPoint ?? '?'}), not bpffs: pins cannot live there`,
        'mount -t bpf bpf /sys/fs/bpf (on the host, shared with the agent)',
      ),
    );
  } else out.push(ok('kernel.bpffs', `bpf-pin-dir ${pin.path} is on bpffs (mount ${pin.mountPoint})`));
  return out;
}
