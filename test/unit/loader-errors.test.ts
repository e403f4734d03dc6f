/* The loader's errors say what failed, the value and the cause once (the shim's message is not
 * wrapped in the same context again), and a pinned map another release laid out differently is
 * told apart by its error kind, not by its message.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, MapMigrationError } from '../../src/bpf';
import { describeLink, loadedProgram } from '../../src/bpf/introspect';
import { objectMapSpecs } from '../../src/bpf/map-spec';
import { loadShim } from '../../src/bpf/shim';
import { u32Codec } from '../../src/bpf/layout';

const ROOT = path.resolve(__dirname, '../..');
const SOCK_LB = path.join(ROOT, 'build/bpf/sock_lb.o');
const isRoot = process.getuid?.() === 0;

function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

/** How often `what` occurs in the message: context said once means once. */
const occurrences = (message: string, what: string) => message.split(what).length - 1;

describe('loader errors carry their context once', () => {
  let dir = '';
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-loader-errors-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("an object that is no ELF file: its path and libbpf's reason", () => {
    const file = path.join(dir, 'not-elf.o');
    fs.writeFileSync(file, 'not an object');
    expect(messageOf(() => BpfObject.open(file))).toBe(`open bpf object ${file}: BPF object format invalid`);
  });

  it.each([
    [
      'a map',
      (o: BpfObject) => o.configureMap('sl_no_such_map', { maxEntries: 8 }),
      'map sl_no_such_map not in object sock_lb: No such file or directory',
      'sl_no_such_map',
    ],
    [
      'a setting',
      (o: BpfObject) => o.setRodata('cfg_no_such', Buffer.alloc(4)),
      'set cfg_no_such: no such variable in the .rodata of sock_lb: No such file or directory',
      'cfg_no_such',
    ],
    [
      'a program',
      (o: BpfObject) => o.progFd('sl_no_such_prog'),
      'program sl_no_such_prog not in object sock_lb: No such file or directory',
      'sl_no_such_prog',
    ],
  ])('%s the object does not have: named once, with the object', (_what, call, message, name) => {
    const obj = BpfObject.open(SOCK_LB);
    try {
      const got = messageOf(() => call(obj));
      expect(got).toBe(message);
      expect(occurrences(got, name)).toBe(1);
    } finally {
      obj.close();
    }
  });

  it.skipIf(!isRoot)('a missing link pin and a program id nobody has (needs root)', () => {
    const pin = path.join(dir, 'no-such-link');
    expect(messageOf(() => describeLink(pin))).toBe(`open link pin ${pin}: No such file or directory`);
    expect(messageOf(() => loadedProgram(0x7ffffff0))).toBe(`open program id ${0x7ffffff0}: No such file or directory`);
  });

  it('a description longer than the first buffer is read whole, at the size the shim says it needs', () => {
    const s = loadShim();
    const h = s.objOpen(SOCK_LB);
    expect(h).toBeTruthy();
    try {
      const needed = new BigUint64Array(1);
      expect(s.objMapsJson(h, Buffer.alloc(16), 16, needed)).toBe(-28 /* ENOSPC */);
      const buf = Buffer.alloc(Number(needed[0]));
      const n = s.objMapsJson(h, buf, buf.length, needed);
      expect(n).toBe(buf.length - 1);
      expect(JSON.parse(buf.subarray(0, n).toString()).map((m: { name: string }) => m.name)).toEqual(
        objectMapSpecs(h, SOCK_LB).map((m) => m.name),
      );
    } finally {
      s.objClose(h);
    }
  });
});

describe.skipIf(!isRoot)('a map of another layout is told apart by kind (needs root: loads an object, attaches nothing)', () => {
  it('opening sl_lb_svc with codecs of other sizes throws MapMigrationError kind incompatible, naming the map and both layouts', () => {
    const obj = BpfObject.open(SOCK_LB);
    try {
      obj.load();
      let err: unknown;
      try {
        BpfMap.fromFd('sl_lb_svc', obj.mapFd('sl_lb_svc'), u32Codec, u32Codec);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MapMigrationError);
      expect(err).toMatchObject({ kind: 'incompatible', map: 'sl_lb_svc' });
      expect((err as Error).message).toContain('key 24/value 12 bytes, this release reads 4/4');
    } finally {
      obj.close();
    }
  });
});
