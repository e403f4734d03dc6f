/* A live eBPF object: open → configure (rodata, map sizes, pins) → load → attach → close.
 * Only what this process created is torn down by close(); pinned maps and links outlive it.
 */
import * as fs from 'node:fs';
import { objectMapSpecs, type MapSpec } from './map-spec';
import { BpfError, check, loadShim, type InpodCfg, type ObjectHandle } from './shim';

export type AttachResult = 'created' | 'updated';

const EINVAL = 22;

export class BpfObject {
  private handle: ObjectHandle | null;
  private loaded = false;

  private constructor(
    readonly path: string,
    handle: ObjectHandle,
  ) {
    this.handle = handle;
  }

  static open(path: string): BpfObject {
    if (!fs.existsSync(path)) throw new BpfError(`open bpf object ${path}`, 2, 'not built (run make)');
    const s = loadShim();
    const h = s.objOpen(path);
    // the shim's message names the object and the cause (libbpf returns no errno here)
    if (!h) throw new BpfError(`open bpf object ${path}`, EINVAL, s.lastError(), { whole: true });
    return new BpfObject(path, h);
  }

  private get h(): ObjectHandle {
    if (!this.handle) throw new Error(`bpf object ${this.path} is closed`);
    return this.handle;
  }

  /**
   * Sets a `const volatile` global before load (the verifier prunes on it). A name the object does
   * not declare, or a value of another size, fails: src/bpf/settings.ts checks a whole table.
   */
  setRodata(name: string, value: Buffer): this {
    check(loadShim().objSetRodata(this.h, name, value, value.length), `set ${name} in ${this.path}`);
    return this;
  }

  /** The `const volatile` globals the object declares in .rodata, with their sizes (before load). */
  rodataVars(): Array<{ name: string; size: number }> {
    const buf = Buffer.alloc(8192);
    const n = check(loadShim().objRodataVars(this.h, buf, buf.length), `list the .rodata of ${this.path}`);
    return buf
      .subarray(0, n)
      .toString('utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name, size] = line.split(' ');
        return { name, size: Number(size) };
      });
  }

  /** Pins every map of the object under dir (by map name); objects declaring a map share it. */
  pinMaps(dir: string): this {
    check(loadShim().objPinMaps(this.h, dir), `pin maps under ${dir}`);
    return this;
  }

  /** Pins a loaded program so that later attachments (per pod) can open it. */
  pinProgram(prog: string, path: string): this {
    check(loadShim().objPinProg(this.h, prog, path), `pin program ${prog}`);
    return this;
  }

  /** Sizes a map and pins it at pinPath; an existing compatible pin is reused at load. A map the object does not declare fails. */
  configureMap(name: string, opts: { maxEntries?: number; pinPath?: string }): this {
    check(
      loadShim().objSetMap(this.h, name, opts.maxEntries ?? 0, opts.pinPath ?? null),
      `configure map ${name} of ${this.path}`,
    );
    return this;
  }

  /** The maps the object declares, as configured so far (call before load). */
  mapSpecs(): MapSpec[] {
    return objectMapSpecs(this.h, this.path);
  }

  /** Makes the object use an existing map (a pinned one, or one another object created). */
  reuseMap(name: string, fd: number): this {
    check(loadShim().objReuseMap(this.h, name, fd), `reuse map ${name}`);
    return this;
  }

  /** Loads every program; a verifier failure throws with the end of the verifier log. */
  load(): this {
    check(loadShim().objLoad(this.h), `load ${this.path}`);
    this.loaded = true;
    return this;
  }

  /** Whether the object has this program (an older release's objects lack newer ones). */
  hasProgram(name: string): boolean {
    return loadShim().objProgFd(this.h, name) >= 0;
  }

  progFd(name: string): number {
    return check(loadShim().objProgFd(this.h, name), `program ${name}`);
  }

  mapFd(name: string): number {
    return check(loadShim().objMapFd(this.h, name), `map ${name}`);
  }

  /**
   * Attaches a program to a cgroup through a link pinned at linkPin. A pin already holding a link
   * to that cgroup is updated in place (atomic program swap, no gap).
   */
  attachCgroup(prog: string, cgroupPath: string, linkPin: string): AttachResult {
    if (!this.loaded) throw new Error(`attach ${prog}: object not loaded`);
    const ret = check(loadShim().cgroupLink(this.h, prog, cgroupPath, linkPin), `attach ${prog} to ${cgroupPath}`);
    return ret === 1 ? 'updated' : 'created';
  }

  close(): void {
    if (this.handle) loadShim().objClose(this.handle);
    this.handle = null;
  }
}

/**
 * Attaches a pinned sk_lookup program to a network namespace through a link pinned at linkPin
 * (updated in place when it already links that namespace).
 */
export function attachNetns(progPin: string, netnsPath: string, linkPin: string): AttachResult {
  const s = loadShim();
  const fd = s.objGet(progPin);
  if (fd < 0) throw new BpfError(`open program ${progPin}`, -fd);
  try {
    return check(s.netnsLink(fd, netnsPath, linkPin), `attach sk_lookup to ${netnsPath}`) === 1 ? 'updated' : 'created';
  } finally {
    s.close(fd);
  }
}

/**
 * Sets up (add) or removes a pod's routing for source-preserving inbound: tcp_fwmark_accept, the
 * mark rule and local default route of both families, and the pinned tcx link on lo running the
 * program pinned at progPin. Removal undoes as much as it can and is idempotent.
 */
export function inpodRouting(progPin: string, netnsPath: string, linkPin: string, cfg: InpodCfg, add: boolean): void {
  const s = loadShim();
  let fd = -1;
  if (add) {
    fd = s.objGet(progPin);
    if (fd < 0) throw new BpfError(`open program ${progPin}`, -fd);
  }
  try {
    check(s.inpodSetup(netnsPath, fd, linkPin, cfg, add ? 1 : 0), `netns ${netnsPath}`);
  } finally {
    if (fd >= 0) s.close(fd);
  }
}

/** Swaps the program behind a pinned link for the pinned program at progPin. */
export function updateLinkProgram(linkPin: string, progPin: string): void {
  const s = loadShim();
  const fd = s.objGet(progPin);
  if (fd < 0) throw new BpfError(`open program ${progPin}`, -fd);
  try {
    check(s.linkUpdateProg(linkPin, fd), `update link ${linkPin}`);
  } finally {
    s.close(fd);
  }
}

/** The network-namespace cookie of the calling process (Linux ≥ 5.14). */
export function netnsCookieSelf(): bigint {
  const out = new BigUint64Array(1);
  check(loadShim().netnsCookieSelf(out), 'netns cookie');
  return out[0];
}

/** The cookie of the network namespace at path (e.g. /var/run/netns/x or /proc/PID/ns/net). */
export function netnsCookieOf(path: string): bigint {
  const out = new BigUint64Array(1);
  check(loadShim().netnsCookieOf(path, out), `netns cookie of ${path}`);
  return out[0];
}

/** Details of a pinned cgroup link, or undefined when the pin is absent. */
export function pinnedLinkInfo(linkPin: string): { cgroupId: bigint; progId: number } | undefined {
  if (!fs.existsSync(linkPin)) return undefined;
  const cg = new BigUint64Array(1);
  const prog = new Uint32Array(1);
  check(loadShim().linkCgroupId(linkPin, cg, prog), `link ${linkPin}`);
  return { cgroupId: cg[0], progId: prog[0] };
}

export function cgroupId(path: string): bigint {
  const out = new BigUint64Array(1);
  check(loadShim().cgroupId(path, out), `cgroup id ${path}`);
  return out[0];
}

/**
 * A socket iterator: a BPF_TRACE_ITER link to the iterator program pinned at progPin. run() walks
 * the sockets of one network namespace (a path such as /var/run/netns/x, or undefined for this
 * process's own) and returns what the program wrote; close() releases the link.
 */
export class SocketIterator {
  private linkFd: number;

  private constructor(
    readonly progPin: string,
    linkFd: number,
  ) {
    this.linkFd = linkFd;
  }

  static open(progPin: string): SocketIterator {
    const s = loadShim();
    const progFd = s.objGet(progPin);
    if (progFd < 0) throw new BpfError(`open program ${progPin}`, -progFd);
    try {
      return new SocketIterator(progPin, check(s.iterLink(progFd), `iterator link for ${progPin}`));
    } finally {
      s.close(progFd);
    }
  }

  /** Runs the iterator in a network namespace; the output is cut at maxBytes, `bytes` is its full length. */
  run(netnsPath: string | undefined, maxBytes: number): { bytes: number; output: Buffer } {
    if (this.linkFd < 0) throw new Error(`iterator ${this.progPin} is closed`);
    const out = Buffer.alloc(maxBytes);
    const ret = Number(loadShim().iterRun(this.linkFd, netnsPath ?? null, out, out.length));
    check(ret, `run iterator ${this.progPin}`);
    return { bytes: ret, output: out.subarray(0, Math.min(ret, out.length)) };
  }

  close(): void {
    if (this.linkFd >= 0) loadShim().close(this.linkFd);
    this.linkFd = -1;
  }
}
