/* src/cni/runtime-choice.ts: which file of cni-conf-dir the runtime loads (libcni ConfFiles +
 * go-cni loadFromConfDir / ocicni), as a pure function of the listing and the contents. */
import { describe, expect, it } from 'vitest';
import { configFileNames, configTheRuntimeLoads, type ConfigDirEntry } from '../../src/cni/runtime-choice';

const list = (name: string, ...types: string[]) =>
  JSON.stringify({ cniVersion: '1.0.0', name, plugins: types.map((type) => ({ type })) });
const single = (name: string, type: string) => JSON.stringify({ cniVersion: '0.4.0', name, type });

describe('configFileNames', () => {
  it("takes the config extensions as Go's filepath.Ext sees them, dot files included, in byte order", () => {
    const listing = [
      'b.json',
      'a.conflist',
      'Z.conf',
      '.hidden.conf',
      '.conflist',
      'x.conflist.bak',
      'x.conf.sluice_bak',
      '.x.conflist.0123456789ab.sluice-tmp',
      'README',
      'é.conf',
      'e.conf',
    ];
    expect(configFileNames(listing)).toEqual(['.conflist', '.hidden.conf', 'Z.conf', 'a.conflist', 'b.json', 'e.conf', 'é.conf']);
  });
});

describe('configTheRuntimeLoads', () => {
  it('is the first config by name, whatever its extension', () => {
    const entries: ConfigDirEntry[] = [
      { name: '20-b.conflist', text: list('b', 'bridge') },
      { name: '10-a.json', text: list('a', 'ptp') },
      { name: '10-A.conf', text: single('A', 'bridge') },
    ];
    expect(configTheRuntimeLoads(entries)).toMatchObject({
      found: true,
      name: '10-A.conf',
      config: { kind: 'single' },
      skipped: [],
    });
    expect(configTheRuntimeLoads(entries.slice(0, 2))).toMatchObject({
      found: true,
      name: '10-a.json',
      config: { kind: 'list' },
    });
  });

  it('skips what the runtime cannot load, and says why', () => {
    const entries: ConfigDirEntry[] = [
      { name: '01-broken.conflist', text: '{"name": ' },
      { name: '02-dir.conflist', text: undefined },
      { name: '03-empty.conflist', text: JSON.stringify({ name: 'e', plugins: [] }) },
      { name: '04-notype.conf', text: JSON.stringify({ name: 'x' }) },
      { name: '05-readme.txt', text: list('t', 'bridge') },
      { name: '50-good.conflist', text: list('good', 'bridge') },
    ];
    const choice = configTheRuntimeLoads(entries);
    expect(choice).toMatchObject({ found: true, name: '50-good.conflist' });
    expect(choice.skipped).toEqual([
      { name: '01-broken.conflist', reason: expect.any(String), notJson: true },
      { name: '03-empty.conflist', reason: 'no plugins in list', notJson: false },
      { name: '04-notype.conf', reason: "missing 'type'", notJson: false },
    ]);
  });

  it('finds nothing in an empty directory, or one with only unloadable files', () => {
    expect(configTheRuntimeLoads([])).toEqual({ found: false, skipped: [] });
    expect(configTheRuntimeLoads([{ name: 'README', text: 'x' }])).toEqual({ found: false, skipped: [] });
    expect(configTheRuntimeLoads([{ name: '10.conflist', text: '[]' }])).toEqual({
      found: false,
      skipped: [{ name: '10.conflist', reason: 'not a JSON object but array', notJson: false }],
    });
  });

  it('a .json file is a list when it has plugins, as libcni decides', () => {
    expect(configTheRuntimeLoads([{ name: 'a.json', text: single('a', 'bridge') }])).toMatchObject({
      config: { kind: 'single' },
    });
    expect(configTheRuntimeLoads([{ name: 'a.json', text: list('a', 'bridge') }])).toMatchObject({ config: { kind: 'list' } });
  });

  it("sortsAs places sluice's conversion of a .conf where the .conf sorted", () => {
    const entries: ConfigDirEntry[] = [
      { name: '10-flannel.conflist', text: list('cbr0', 'flannel', 'sluice-cni') },
      { name: '10-flannel.conf.json', text: single('other', 'bridge') }, // sorts between .conf and .conflist
    ];
    expect(configTheRuntimeLoads(entries)).toMatchObject({ name: '10-flannel.conf.json' });
    expect(configTheRuntimeLoads(entries, { sortsAs: new Map([['10-flannel.conflist', '10-flannel.conf']]) })).toMatchObject({
      name: '10-flannel.conflist',
    });
  });
});
