/* The .rodata settings: OBJECT_CONFIG (src/datapath.ts) names exactly the globals each built
 * object declares, programSettings() gives each a value of its size, and an object whose global
 * was renamed without its TypeScript side fails to configure, naming the object and the global.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compileBpf } from '../harness/bpf-compile';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { BpfObject, ObjectSettingsError, applySettings } from '../../src/bpf';
import {
  installDatapath,
  OBJECT_CONFIG,
  OBJECTS,
  programSettings,
  SOCK_DESTROY_OBJECT,
  type ProgramSettingsInput,
} from '../../src/datapath';
import { buildBpfVariant } from '../kernel/bpf-variant';
import { readObjectBtf } from './contract/btf';

const ROOT = path.resolve(__dirname, '../..');
const OBJECT_DIR = path.join(ROOT, 'build/bpf');
const INPUT: ProgramSettingsInput = {
  hostnsOnly: false,
  hostNetnsCookie: 4096n,
  proxyUid: 1337,
  proxyGid: 1337,
  dnsServers: ['10.96.0.10'],
  proxyMark: { mark: 0x539, mask: 0xfff },
};
const isRoot = process.getuid?.() === 0;

describe('each object declares the settings its table names', () => {
  it('every built object has an entry in OBJECT_CONFIG, and every entry an object', () => {
    const built = fs
      .readdirSync(OBJECT_DIR)
      .filter((f) => f.endsWith('.o'))
      .sort();
    expect(Object.keys(OBJECT_CONFIG).sort()).toEqual(built);
    // the attached programs' objects, and the socket-destroy iterators' (loaded where the kernel has bpf_sock_destroy)
    expect([...Object.keys(OBJECTS), SOCK_DESTROY_OBJECT].sort()).toEqual(built);
  });

  it.each(Object.keys(OBJECT_CONFIG))(
    '%s: the DATASEC .rodata variables are exactly the declared settings, each value of its size',
    (file) => {
      const rodata = readObjectBtf(path.join(OBJECT_DIR, file)).rodata;
      const declared = OBJECT_CONFIG[file as keyof typeof OBJECT_CONFIG].settings;
      expect(rodata.map((v) => v.name).sort()).toEqual([...declared].sort());
      const values = programSettings(INPUT);
      for (const v of rodata) expect(values.get(v.name as never)?.length, v.name).toBe(v.size);
    },
  );

  it('an opened object lists the same variables through the shim as its BTF holds', () => {
    const obj = BpfObject.open(path.join(OBJECT_DIR, 'sock_lb.o'));
    try {
      expect(obj.rodataVars()).toEqual(readObjectBtf(path.join(OBJECT_DIR, 'sock_lb.o')).rodata);
    } finally {
      obj.close();
    }
  });
});

describe('a renamed .rodata global fails the load', () => {
  let work = '';
  /** objects built from this tree with cfg_inbound_mark renamed in C only */
  let renamed = '';
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-contract-settings-'));
    renamed = buildBpfVariant(work, 'renamed-global', [
      { file: 'lib/capture.h', what: 'cfg_inbound_mark renamed', find: /\bcfg_inbound_mark\b/g, replace: 'cfg_inbound_mark_v2' },
      { file: 'capture.c', what: 'cfg_inbound_mark renamed', find: /\bcfg_inbound_mark\b/g, replace: 'cfg_inbound_mark_v2' },
    ]);
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  function configure(file: string, otherRelease: boolean): string[] {
    const obj = BpfObject.open(file);
    try {
      return applySettings(obj, OBJECT_CONFIG['capture.o'].settings, programSettings(INPUT), { otherRelease });
    } finally {
      obj.close();
    }
  }

  it('this release: the object and both names are in the error', () => {
    let err: unknown;
    try {
      configure(path.join(renamed, 'capture.o'), false);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ObjectSettingsError);
    expect(err).toMatchObject({
      object: path.join(renamed, 'capture.o'),
      missing: ['cfg_inbound_mark'],
      unknown: ['cfg_inbound_mark_v2'],
    });
    expect((err as Error).message).toBe(
      `Cannot configure ${path.join(renamed, 'capture.o')}: its .rodata has no cfg_inbound_mark, which the agent must set (renamed or removed in bpf/ without the table in src/datapath.ts?); ` +
        'and it declares cfg_inbound_mark_v2, which the agent does not set (the programs would run with the compiled-in default)',
    );
  });

  it('another release: a global this agent does not know fails as well', () => {
    expect(() => configure(path.join(renamed, 'capture.o'), true)).toThrow(
      expect.objectContaining({ missing: [], unknown: ['cfg_inbound_mark_v2'] }),
    );
  });

  it('another release: settings it never had are skipped and returned, the others set', () => {
    // an older release's object: fewer settings, each one this agent knows
    const src = path.join(work, 'older.c');
    fs.writeFileSync(
      src,
      [
        '#include <linux/bpf.h>',
        '#include <bpf/bpf_helpers.h>',
        'const volatile __u32 cfg_proxy_uid = 7;',
        'const volatile __u64 cfg_host_netns_cookie = 0;',
        'char LICENSE[] SEC("license") = "GPL";',
        'SEC("tc") int older(struct __sk_buff *skb) { return cfg_proxy_uid + (int)cfg_host_netns_cookie; }',
      ].join('\n'),
    );
    compileBpf(src, path.join(work, 'older.o'));
    const skipped = configure(path.join(work, 'older.o'), true);
    expect(skipped.sort()).toEqual(
      OBJECT_CONFIG['capture.o'].settings.filter((n) => n !== 'cfg_proxy_uid' && n !== 'cfg_host_netns_cookie').sort(),
    );
    expect(() => configure(path.join(work, 'older.o'), false)).toThrow(ObjectSettingsError);
  });

  describe.skipIf(!isRoot)('installDatapath (needs root: a pin directory on bpffs)', () => {
    const pinDir = `/sys/fs/bpf/sltest-contract-${process.pid}`;

    it('refuses the objects before any pin or link changes, naming the object and the global', () => {
      fs.mkdirSync(pinDir, { recursive: true });
      onTestFinished(() => fs.rmSync(pinDir, { recursive: true, force: true }));
      expect(() =>
        installDatapath({
          ...INPUT,
          pinDir,
          cgroupRoot: '/nonexistent-cgroup',
          sizes: { service: 64, backend: 64, affinity: 64 },
          objectDir: renamed,
        }),
      ).toThrow(
        expect.objectContaining({
          name: 'ObjectSettingsError',
          object: path.join(renamed, 'sock_lb.o'),
          missing: ['cfg_inbound_mark'],
        }),
      );
      // nothing was pinned: the directories the install creates, and no map
      const pins = fs.readdirSync(pinDir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
      expect(pins).toEqual([]);
    });
  });
});
