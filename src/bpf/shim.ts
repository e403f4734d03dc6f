/* Bindings to libsluice (native/shim.c) and the few libbpf calls used directly, through koffi.
 * Loaded once, lazily, so that commands which never touch the kernel start without it.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import koffi, { type LibraryHandle } from 'koffi';

/**
 * A failed kernel or libbpf call: `op` names what was attempted, `errno` is matchable. The
 * message is `op: detail`, or the shim's own message when it already names what failed (the
 * context is said once).
 */
export class BpfError extends Error {
  constructor(
    readonly op: string,
    readonly errno: number,
    detail?: string,
    opts: { whole?: boolean } = {},
  ) {
    super(opts.whole && detail ? detail : `${op}: ${detail ?? errnoText(errno)}`);
    this.name = 'BpfError';
  }
}

const errnoNames: Record<number, string> = {
  1: 'EPERM: operation not permitted',
  2: 'ENOENT: no such entry',
  7: 'E2BIG: map is full',
  9: 'EBADF: bad file descriptor',
  12: 'ENOMEM: out of memory',
  13: 'EACCES: permission denied',
  17: 'EEXIST: key exists',
  22: 'EINVAL: invalid argument',
  95: 'EOPNOTSUPP: not supported by this kernel',
};

export function errnoText(errno: number): string {
  return errnoNames[errno] ?? `errno ${errno}`;
}

/** The directory holding build/ (the package root), also when running from build/dist. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`Cannot find the sluice package root above ${__dirname}`);
}

function buildPath(file: string): string {
  return path.join(packageRoot(), 'build', file);
}

/** struct sl_inpod_cfg (native/shim.h): routing of a captured pod's source-preserving inbound. */
export interface InpodCfg {
  mark: number;
  mask: number;
  table: number;
  pref: number;
  ipv6: number;
}

/** Pointer-sized opaque handle to a libbpf `struct bpf_object`. */
export type ObjectHandle = unknown;

/** Pointer-sized opaque handle to a ring buffer reader (native/ringbuf.c). */
export type RingbufHandle = unknown;

export interface Shim {
  lastError(): string;
  objOpen(path: string): ObjectHandle | null;
  objSetRodata(obj: ObjectHandle, name: string, data: Buffer, len: number): number;
  objRodataVars(obj: ObjectHandle, buf: Buffer, len: number): number;
  objSetMap(obj: ObjectHandle, name: string, maxEntries: number, pinPath: string | null): number;
  objPinMaps(obj: ObjectHandle, dir: string): number;
  objLoad(obj: ObjectHandle): number;
  objPinProg(obj: ObjectHandle, prog: string, path: string): number;
  netnsLink(progFd: number, netnsPath: string, linkPin: string): number;
  linkUpdateProg(linkPin: string, progFd: number): number;
  objProgFd(obj: ObjectHandle, name: string): number;
  progTestRun(
    progFd: number,
    data: Buffer | null,
    dataLen: number,
    ctx: Buffer | null,
    ctxLen: number,
    retval: Uint32Array,
  ): number;
  objMapFd(obj: ObjectHandle, name: string): number;
  objClose(obj: ObjectHandle): void;
  cgroupLink(obj: ObjectHandle, prog: string, cgroup: string, linkPin: string): number;
  linkCgroupId(linkPin: string, cgroupId: BigUint64Array, progId: Uint32Array): number;
  inpodSetup(netnsPath: string, progFd: number, linkPin: string, cfg: InpodCfg, add: number): number;
  linkProgId(linkPin: string, progId: Uint32Array): number;
  objMapsJson(obj: ObjectHandle, buf: Buffer, len: number, needed: BigUint64Array): number;
  mapSpecJson(fd: number, buf: Buffer, len: number, needed: BigUint64Array): number;
  objReuseMap(obj: ObjectHandle, map: string, fd: number): number;
  socketCookieOf(pid: number, fd: number, cookie: BigUint64Array): number;
  sockhashAddFromPid(mapFd: number, key: Buffer, pid: number, fd: number): number;
  netnsCookieSelf(out: BigUint64Array): number;
  netnsCookieOf(path: string, out: BigUint64Array): number;
  cgroupId(path: string, out: BigUint64Array): number;
  iterLink(progFd: number): number;
  /** bytes the iterator produced (a number: koffi maps int64_t to number when it fits), or -errno */
  iterRun(linkFd: number, netnsPath: string | null, out: Buffer | null, outLen: number): number | bigint;
  ringbufOpen(mapFd: number): RingbufHandle | null;
  ringbufEpollFd(r: RingbufHandle): number;
  /** bytes written into out (records, each a uint32 length then its bytes); more[0] = 1 when out filled up first */
  ringbufConsume(r: RingbufHandle, out: Buffer, outLen: number, more: Int32Array): number;
  ringbufFree(r: RingbufHandle): void;
  // libbpf, directly
  objGet(path: string): number;
  objPin(fd: number, path: string): number;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: bigint): number;
  mapLookup(fd: number, key: Buffer, value: Buffer): number;
  mapDelete(fd: number, key: Buffer): number;
  mapNextKey(fd: number, key: Buffer | null, next: Buffer): number;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: Uint32Array, opts: Buffer): number;
  mapDeleteBatch(fd: number, keys: Buffer, count: Uint32Array, opts: Buffer): number;
  mapLookupBatch(
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: Uint32Array,
    opts: Buffer,
  ): number;
  mapInfo(fd: number, info: Buffer, len: Uint32Array): number;
  progGetFdById(id: number): number;
  close(fd: number): number;
}

let shim: Shim | undefined;
let library: LibraryHandle | undefined;

/** libsluice itself, loaded once per process for every module that binds to it (src/native too). */
export function loadLibrary(): LibraryHandle {
  if (library) return library;
  const libPath = process.env.SLUICE_SHIM ?? buildPath('libsluice.so');
  if (!fs.existsSync(libPath)) throw new Error(`Cannot load ${libPath}: not built (run make)`);
  library = koffi.load(libPath);
  return library;
}

export function loadShim(): Shim {
  if (shim) return shim;
  const lib = loadLibrary();
  const libbpf = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');
  koffi.opaque('bpf_object');
  koffi.opaque('sl_ringbuf');
  koffi.struct('sl_inpod_cfg', { mark: 'uint32_t', mask: 'uint32_t', table: 'uint32_t', pref: 'uint32_t', ipv6: 'int32_t' });
  shim = {
    lastError: lib.func('const char *sl_last_error()'),
    objOpen: lib.func('bpf_object *sl_obj_open(const char *path)'),
    objSetRodata: lib.func('int sl_obj_set_rodata(bpf_object *obj, const char *var, const void *data, size_t len)'),
    objRodataVars: lib.func('int sl_obj_rodata_vars(bpf_object *obj, char *buf, size_t len)'),
    objSetMap: lib.func('int sl_obj_set_map(bpf_object *obj, const char *map, uint32_t max, const char *pin)'),
    objPinMaps: lib.func('int sl_obj_pin_maps(bpf_object *obj, const char *dir)'),
    objLoad: lib.func('int sl_obj_load(bpf_object *obj)'),
    objPinProg: lib.func('int sl_obj_pin_prog(bpf_object *obj, const char *prog, const char *path)'),
    netnsLink: lib.func('int sl_netns_link(int prog_fd, const char *netns, const char *pin)'),
    linkUpdateProg: lib.func('int sl_link_update_prog(const char *pin, int prog_fd)'),
    objProgFd: lib.func('int sl_obj_prog_fd(bpf_object *obj, const char *prog)'),
    progTestRun: lib.func(
      'int sl_prog_test_run(int prog_fd, const void *data, uint32_t data_len, void *ctx, uint32_t ctx_len, uint32_t *retval)',
    ),
    objMapFd: lib.func('int sl_obj_map_fd(bpf_object *obj, const char *map)'),
    objClose: lib.func('void sl_obj_close(bpf_object *obj)'),
    cgroupLink: lib.func('int sl_cgroup_link(bpf_object *obj, const char *prog, const char *cg, const char *pin)'),
    linkCgroupId: lib.func('int sl_link_cgroup_id(const char *pin, uint64_t *cg, uint32_t *prog)'),
    inpodSetup: lib.func('int sl_inpod_setup(const char *netns, int prog_fd, const char *pin, const sl_inpod_cfg *cfg, int add)'),
    linkProgId: lib.func('int sl_link_prog_id(const char *pin, uint32_t *prog)'),
    objMapsJson: lib.func('int sl_obj_maps_json(bpf_object *obj, char *buf, size_t len, size_t *needed)'),
    mapSpecJson: lib.func('int sl_map_spec_json(int fd, char *buf, size_t len, size_t *needed)'),
    objReuseMap: lib.func('int sl_obj_reuse_map(bpf_object *obj, const char *map, int fd)'),
    socketCookieOf: lib.func('int sl_socket_cookie_of(int pid, int fd, uint64_t *cookie)'),
    sockhashAddFromPid: lib.func('int sl_sockhash_add_from_pid(int map_fd, const void *key, int pid, int fd)'),
    netnsCookieSelf: lib.func('int sl_netns_cookie_self(uint64_t *cookie)'),
    netnsCookieOf: lib.func('int sl_netns_cookie_of(const char *path, uint64_t *cookie)'),
    cgroupId: lib.func('int sl_cgroup_id(const char *path, uint64_t *id)'),
    iterLink: lib.func('int sl_iter_link(int prog_fd)'),
    iterRun: lib.func('int64_t sl_iter_run(int link_fd, const char *netns, void *out, size_t out_len)'),
    ringbufOpen: lib.func('sl_ringbuf *sl_ringbuf_open(int map_fd)'),
    ringbufEpollFd: lib.func('int sl_ringbuf_epoll_fd(sl_ringbuf *r)'),
    ringbufConsume: lib.func('int sl_ringbuf_consume(sl_ringbuf *r, void *out, size_t out_len, int *more)'),
    ringbufFree: lib.func('void sl_ringbuf_free(sl_ringbuf *r)'),
    objGet: libbpf.func('int bpf_obj_get(const char *path)'),
    objPin: libbpf.func('int bpf_obj_pin(int fd, const char *path)'),
    mapUpdate: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    mapLookup: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    mapDelete: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
    mapNextKey: libbpf.func('int bpf_map_get_next_key(int fd, const void *key, void *next)'),
    mapUpdateBatch: libbpf.func(
      'int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count, const void *opts)',
    ),
    mapDeleteBatch: libbpf.func('int bpf_map_delete_batch(int fd, const void *keys, uint32_t *count, const void *opts)'),
    mapLookupBatch: libbpf.func(
      'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, uint32_t *count, const void *opts)',
    ),
    mapInfo: libbpf.func('int bpf_obj_get_info_by_fd(int fd, void *info, uint32_t *len)'),
    progGetFdById: libbpf.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
    close: libc.func('int close(int fd)'),
  };
  return shim;
}

/** Throws a BpfError for a negative return of a shim call, with the shim's message. */
export function check(ret: number, op: string): number {
  if (ret >= 0) return ret;
  const msg = loadShim().lastError();
  // the shim's messages name what failed, the value and the cause: nothing to add
  throw msg ? new BpfError(op, -ret, msg, { whole: true }) : new BpfError(op, -ret);
}

/** Throws a BpfError for a negative return of a direct libbpf call. */
export function checkErrno(ret: number, op: string): number {
  if (ret >= 0) return ret;
  throw new BpfError(op, -ret);
}
