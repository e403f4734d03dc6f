/* Loading a set of objects over the maps pinned by a previous release, without a gap.
 *
 * For every map the objects declare, the pin under pinDir is compared with what the objects want
 * (type, sizes, flags, and the key and value layouts from BTF):
 *  - compatible: reused as it is, contents and all (the common restart);
 *  - missing: created;
 *  - incompatible: created anew and filled from the pinned map, each entry converted (verbatim,
 *    field by field, or by a registered converter); a map that cannot be converted is rebuilt
 *    empty or refused, as its policy says.
 * Then, in this order: the programs are loaded against those maps, the new maps filled, the
 * programs attached (pinned links swapped atomically; any failure puts the old programs back),
 * entries the old programs created meanwhile copied too, and only then the new maps pinned over
 * the old pins (pinned beside them, renamed over them: a pin always names a whole map) and pins
 * of maps no object declares any more removed. A failure before the swap leaves the old datapath
 * exactly as it was. Of what the old programs change between the copy and the swap
 * (milliseconds), the entries they add are carried; counter increments in that window are lost,
 * and entries they delete in it stay in the new map (LRU maps age them out).
 *
 * The idea follows Cilium (pkg/bpf/collection.go: incompatible maps are replaced, pins committed
 * after attach; bpf/cilium-map-migrate.c: `:pending` pins), with the entries carried over.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { possibleCpus } from './cpus';
import { applyPlan, planConversion, UnconvertibleLayout, type ConversionPlan } from './convert';
import { LinkTransaction, PENDING_SUFFIX, pinReplacing } from './link-transaction';
import { copyEntries, type CopyMethod, type EntryConvert, type LiveMap } from './map-copy';
import {
  describeSpec,
  incompatibility,
  isPerCpu,
  layoutId,
  liveMapSpec,
  MAP_TYPE,
  mapTypeName,
  pinnedMapSpec,
  type MapSpec,
} from './map-spec';
import { MapMigrationError } from './migration-error';
import { BpfObject } from './object';
import { BpfError, loadShim } from './shim';
import type { SocketFd } from './socket-owners';

/** What a map whose entries cannot be converted becomes. */
export interface MapPolicy {
  /** `rebuild`: created empty (the agent or the programs fill it again); `refuse`: the old datapath stays and the start fails */
  unconvertible: 'rebuild' | 'refuse';
  /** what starting empty costs (rebuild), or why it is not allowed (refuse): said in the report */
  why: string;
}

/** A conversion a field-by-field copy cannot express (a field's meaning changed, a key re-keyed). */
export interface RegisteredConverter {
  map: string;
  /**
   * layoutId() of the pinned map's layouts. A map the kernel keeps without BTF (a sockhash: libbpf
   * creates those without it) has the id of its sizes alone; a refusal names both ids exactly.
   */
  from: string;
  /** layoutId() of the new map's layouts */
  to: string;
  /** named in reports: `converter: "<name>"` */
  name: string;
  /** one entry, as raw bytes (per-CPU values: every CPU's 8-byte-aligned slot); undefined drops it */
  convert: EntryConvert;
}

export interface MigrationRegistry {
  policies: Record<string, MapPolicy>;
  /** for maps the table does not name */
  defaultPolicy: MapPolicy;
  converters: RegisteredConverter[];
}

export type MigrationAction = 'reused' | 'created' | 'migrated' | 'rebuilt' | 'removed';

/** What happened to one map (`sluice status -o json` → datapath.migration, the agent's log). */
export interface MapMigration {
  map: string;
  action: MigrationAction;
  /** the pinned map (migrated, rebuilt, removed) */
  from?: string;
  /** the new map (created, migrated, rebuilt) */
  to?: string;
  /** why the pinned map could not be reused */
  reason?: string;
  /** how the entries were carried: verbatim, by-field, registered:<name>, sockets-by-cookie, none */
  converter?: string;
  /** entries the pinned map held when it was read (copies made from user space) */
  entries?: number;
  /** entries written into the new map before the programs were swapped */
  copied?: number;
  /** entries the old programs added meanwhile, copied after the swap */
  caughtUp?: number;
  /** fields the new layout adds (they start at zero) */
  added?: string[];
  /** fields of the old layout left behind */
  dropped?: string[];
  /** what the new map starts without */
  lost?: string;
}

export interface MigratingLoadOptions<T> {
  pinDir: string;
  /** object files, loaded in this order; a map declared by several is one map shared by them */
  objects: string[];
  /** sets .rodata and map sizes of an opened object (before its maps are compared with the pins) */
  configure(obj: BpfObject): void;
  /** attaches the loaded programs; every link and program pin goes through tx so it can be undone */
  attach(loaded: ReadonlyMap<string, BpfObject>, tx: LinkTransaction): T;
  /** pins under pinDir this loader may remove once no object declares them */
  ownsPin(name: string): boolean;
  registry: MigrationRegistry;
  /** socket fds of the processes whose sockets the programs see (to copy a sockhash) */
  socketOwners: () => SocketFd[];
}

export interface MigratingLoadResult<T> {
  attached: T;
  maps: MapMigration[];
}

interface Plan {
  spec: MapSpec;
  report: MapMigration;
  /** the pinned map's fd, while it is needed (reused, or the source of a copy) */
  oldFd?: number;
  oldSpec?: MapSpec;
  method?: CopyMethod;
  /** the new map's fd (owned by the object that created it) */
  newFd?: number;
}

/** Per-type: how entries of an incompatible map can be carried, or why not. */
function chooseMethod(
  name: string,
  old: MapSpec,
  want: MapSpec,
  reg: MigrationRegistry,
  cpus: number,
): { method: CopyMethod; converter: string; plan?: ConversionPlan } {
  const registered = reg.converters.find((c) => c.map === name && c.from === layoutId(old) && c.to === layoutId(want));
  const userTypes: number[] = [
    MAP_TYPE.hash,
    MAP_TYPE.array,
    MAP_TYPE.percpu_hash,
    MAP_TYPE.percpu_array,
    MAP_TYPE.lru_hash,
    MAP_TYPE.lru_percpu_hash,
    MAP_TYPE.lpm_trie,
  ];
  if (userTypes.includes(old.type) && userTypes.includes(want.type)) {
    if (registered) return { method: { kind: 'user', convert: registered.convert }, converter: `registered:${registered.name}` };
    if (isPerCpu(old.type) !== isPerCpu(want.type))
      throw new UnconvertibleLayout('', `${mapTypeName(old.type)} cannot become ${mapTypeName(want.type)} (per-CPU values)`);
    const keyPlan = planConversion(old.key, old.keySize, want.key, want.keySize);
    const valuePlan = planConversion(old.value, old.valueSize, want.value, want.valueSize);
    const method: CopyMethod = {
      kind: 'plan',
      key: keyPlan,
      value: valuePlan,
      slots: isPerCpu(want.type) ? cpus : 1,
      oldSlot: isPerCpu(old.type) ? Math.ceil(old.valueSize / 8) * 8 : old.valueSize,
      newSlot: isPerCpu(want.type) ? Math.ceil(want.valueSize / 8) * 8 : want.valueSize,
    };
    const plan: ConversionPlan = {
      ...valuePlan,
      added: [...keyPlan.added.map((f) => `key.${f}`), ...valuePlan.added],
      dropped: [...keyPlan.dropped.map((f) => `key.${f}`), ...valuePlan.dropped],
      verbatim: keyPlan.verbatim && valuePlan.verbatim,
    };
    return { method, converter: plan.verbatim ? 'verbatim' : 'by-field', plan };
  }
  if (old.type !== want.type)
    throw new UnconvertibleLayout('', `${mapTypeName(old.type)} cannot become ${mapTypeName(want.type)}`);
  if (old.type === MAP_TYPE.sk_storage) {
    // reachable only through each socket, by programs: user space cannot copy it, and the
    // map-element iterator that could (iter/bpf_sk_storage_map) is refused (EPERM) on the
    // kernels sluice is tested on
    throw new UnconvertibleLayout('', 'socket storage is not copied: it can only be reached through each live socket');
  }
  if (old.type === MAP_TYPE.sockhash || old.type === MAP_TYPE.sockmap) {
    if (registered) {
      // the value is the socket: a registered converter decides its key (given the cookie as the value)
      return {
        method: { kind: 'sockets', convertKey: (k, cookie) => registered.convert(k, cookie)?.key },
        converter: `registered:${registered.name}`,
      };
    }
    const keyPlan = planConversion(old.key, old.keySize, want.key, want.keySize);
    const convertKey = (k: Buffer) => {
      const key = Buffer.alloc(want.keySize);
      applyPlan(keyPlan, k, 0, key, 0);
      return key;
    };
    return {
      method: { kind: 'sockets', convertKey },
      converter: keyPlan.verbatim ? 'sockets-by-cookie' : 'sockets-by-cookie, key by-field',
      plan: keyPlan,
    };
  }
  if (old.type === MAP_TYPE.ringbuf || old.type === MAP_TYPE.perf_event_array)
    return { method: { kind: 'none' }, converter: 'none (events, nothing to keep)' };
  throw new UnconvertibleLayout('', `entries of a ${mapTypeName(old.type)} map are not copied`);
}

/** Pins left beside their final path (maps, programs, links) by a run that died before renaming them. */
function removeStalePending(dir: string, depth = 0): void {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (depth < 2) removeStalePending(p, depth + 1);
    } else if (entry.name.endsWith(PENDING_SUFFIX)) {
      fs.rmSync(p, { force: true });
    }
  }
}

/** A pin of a map (not of a program or link, nor a directory). */
function isMapPin(pinPath: string): boolean {
  if (!fs.statSync(pinPath).isFile()) return false;
  const s = loadShim();
  const fd = s.objGet(pinPath);
  if (fd < 0) return false;
  try {
    return /^map_type:/m.test(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  } finally {
    s.close(fd);
  }
}

function openPinnedFd(pinPath: string): number {
  const fd = loadShim().objGet(pinPath);
  if (fd < 0) throw new BpfError(`open pinned map ${pinPath}`, -fd);
  return fd;
}

/** Loads, fills, attaches and commits; see the file comment. */
export function loadWithMigration<T>(opts: MigratingLoadOptions<T>): MigratingLoadResult<T> {
  const s = loadShim();
  const cpus = possibleCpus();
  removeStalePending(opts.pinDir);
  const objects = new Map<string, BpfObject>();
  const plans = new Map<string, Plan>();
  const closeAll = () => {
    for (const o of objects.values()) o.close();
    for (const p of plans.values()) if (p.oldFd !== undefined) s.close(p.oldFd);
  };
  try {
    // 1. open and configure; what the objects want
    const declaredBy = new Map<string, string>();
    for (const file of opts.objects) {
      const obj = BpfObject.open(file);
      objects.set(file, obj);
      opts.configure(obj);
      for (const spec of obj.mapSpecs()) {
        const first = plans.get(spec.name);
        if (first) {
          const diff = incompatibility(first.spec, spec);
          if (diff) {
            throw new MapMigrationError(
              'objects-disagree',
              spec.name,
              `map ${spec.name}: ${declaredBy.get(spec.name)} and ${file} declare it differently (${diff})`,
            );
          }
          continue;
        }
        declaredBy.set(spec.name, file);
        plans.set(spec.name, { spec, report: { map: spec.name, action: 'created', to: describeSpec(spec) } });
      }
    }
    // 2. compare with the pins: reuse, create, migrate or rebuild
    for (const [name, p] of plans) {
      const pinned = pinnedMapSpec(path.join(opts.pinDir, name));
      if (!pinned) continue;
      const reason = incompatibility(pinned, p.spec);
      p.oldFd = openPinnedFd(path.join(opts.pinDir, name));
      p.oldSpec = liveMapSpec(p.oldFd); // of this very fd: the pin could have been replaced since
      if (!reason) {
        p.report = { map: name, action: 'reused' };
        continue;
      }
      p.report = { map: name, action: 'migrated', from: describeSpec(p.oldSpec), to: describeSpec(p.spec), reason };
      try {
        const chosen = chooseMethod(name, p.oldSpec, p.spec, opts.registry, cpus);
        p.method = chosen.method;
        p.report.converter = chosen.converter;
        if (chosen.plan?.added.length) p.report.added = chosen.plan.added;
        if (chosen.plan?.dropped.length) p.report.dropped = chosen.plan.dropped;
      } catch (e) {
        if (!(e instanceof UnconvertibleLayout)) throw e;
        const policy = opts.registry.policies[name] ?? opts.registry.defaultPolicy;
        if (policy.unconvertible === 'refuse') {
          throw new MapMigrationError(
            'unconvertible',
            name,
            `map ${name}: the pinned map (${describeSpec(p.oldSpec)}) cannot be converted to the new one (${describeSpec(p.spec)}): ${e.message}. ` +
              `Starting it empty is refused: ${policy.why}. Register a converter for ${name} ${layoutId(p.oldSpec)} → ${layoutId(p.spec)}; ` +
              `the running datapath is left as it was`,
          );
        }
        p.report = { ...p.report, action: 'rebuilt', lost: `${e.message}; starts empty: ${policy.why}` };
      }
    }
    // 3. load, each map shared with the objects after the one that created it
    for (const [file, obj] of objects) {
      for (const spec of obj.mapSpecs()) {
        const p = plans.get(spec.name)!;
        if (p.newFd !== undefined) obj.reuseMap(spec.name, p.newFd);
        else if (p.report.action === 'reused') obj.reuseMap(spec.name, p.oldFd!);
      }
      obj.load();
      for (const spec of obj.mapSpecs()) {
        const p = plans.get(spec.name)!;
        if (p.report.action !== 'reused' && p.newFd === undefined && declaredBy.get(spec.name) === file)
          p.newFd = obj.mapFd(spec.name);
      }
    }
    // 4. fill the new maps (the old programs still run: a failure here changes nothing)
    for (const p of plans.values()) {
      if (p.report.action !== 'migrated' || !p.method) continue;
      const from: LiveMap = { fd: p.oldFd!, spec: p.oldSpec! };
      const to: LiveMap = { fd: p.newFd!, spec: p.spec };
      const r = copyEntries(p.method, from, to, { onlyMissing: false, cpus, socketOwners: opts.socketOwners });
      p.report.entries = r.entries;
      p.report.copied = r.copied;
      if (r.beyond) p.report.lost = `${r.beyond} array slots past the new max_entries ${p.spec.maxEntries}`;
      if (r.unowned) p.report.lost = `${r.unowned} sockets no process under the cgroup holds (closing)`;
    }
    // 5. attach: swap the programs; a failure puts the old ones back
    const tx = new LinkTransaction();
    let attached: T;
    try {
      attached = opts.attach(objects, tx);
    } catch (e) {
      const failed = tx.rollback();
      if (failed.length) (e as Error).message += ` (and the previous programs could not all be put back: ${failed.join('; ')})`;
      throw e;
    }
    tx.commit();
    // 6. what the old programs wrote between the copy and the swap
    for (const p of plans.values()) {
      if (p.report.action !== 'migrated' || !p.method) continue;
      try {
        const r = copyEntries(
          p.method,
          { fd: p.oldFd!, spec: p.oldSpec! },
          { fd: p.newFd!, spec: p.spec },
          { onlyMissing: true, cpus, socketOwners: opts.socketOwners },
        );
        if (r.copied) p.report.caughtUp = r.copied;
      } catch (e) {
        p.report.lost = `entries created while the programs were swapped: ${(e as Error).message}`;
      }
    }
    // 7. commit: the new maps take the pins, pins of maps no longer declared go
    const maps: MapMigration[] = [];
    for (const [name, p] of plans) {
      if (p.report.action !== 'reused') {
        try {
          pinReplacing(p.newFd!, path.join(opts.pinDir, name));
        } catch (e) {
          throw new MapMigrationError(
            'commit-failed',
            name,
            `map ${name}: pinning the new map failed after the programs were swapped (they run on it; the pin still names the old map, which the next start migrates again): ${(e as Error).message}`,
            { cause: e },
          );
        }
      }
      maps.push(p.report);
    }
    for (const name of fs.readdirSync(opts.pinDir).sort()) {
      const pin = path.join(opts.pinDir, name);
      if (plans.has(name) || !opts.ownsPin(name) || !isMapPin(pin)) continue;
      const old = pinnedMapSpec(pin);
      fs.rmSync(pin);
      maps.push({ map: name, action: 'removed', from: old && describeSpec(old) });
    }
    return { attached, maps };
  } finally {
    // pins and links keep what is in use alive; the objects' and our own fds are not needed
    closeAll();
  }
}
