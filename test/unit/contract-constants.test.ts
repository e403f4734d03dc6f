/* Every constant and numbered list the C side shares with TypeScript (modes, policy and service
 * flags, counters, capture outcomes and stat indices, SL_MAX_*, slot counts, proxy ports and marks,
 * protocol numbers, CNI versions and error codes) equals its mirror; and the check fails when one
 * side changes alone, shown on mutated printer output and on a build from edited headers.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EP_STATS, EVENT_REASONS, EVENT_TYPES } from '../../src/bpf/constants';
import { epStatsCodec } from '../../src/bpf/layout';
import { EVENT_TYPE_NAMES } from '../../src/monitor/types';
import {
  cniErrorsDefinedIn,
  constantsDefinedIn,
  constantsMismatches,
  MIRRORED_HEADERS,
  readCConstants,
  readHeader,
  ROOT,
  typeScriptMirror,
  type CConstants,
} from './contract/constants';

function definedIn(root = ROOT): string[] {
  return [
    ...MIRRORED_HEADERS.flatMap((h) => constantsDefinedIn(readHeader(h, root))),
    ...cniErrorsDefinedIn(readHeader('cni/cni-spec.h', root)),
  ];
}

const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

describe('constants shared by C and TypeScript', () => {
  const c = readCConstants();

  it('the header scan finds the constants of each header (so the completeness check below has something to check)', () => {
    const names = definedIn();
    for (const n of [
      'SL_EV_SOCK_DESTROY',
      'SL_REASON_HANDSHAKES_FULL',
      'SL_SVC_F_NO_LOCAL',
      'SL_MODE_AMBIENT',
      'SL_POL_TPROXY',
      'SL_MAX_POD_IPS',
      'SL_LISTENER_SLOTS',
      'SL_SOCK_REV_SLOTS',
      'SL_CNT_NO_LOCAL_BACKEND',
      'CAP_REFUSED',
      'CAP_STAT_NO_LISTENER',
      'SL_ALLOW',
      'CAP_IN_STEER',
      'SL_PORT_HBONE',
      'SL_TPROXY_MARK',
      'SL_INBOUND_MARK_MASK',
      'CNI_ERR_TRY_LATER',
    ]) {
      expect(names).toContain(n);
    }
  });

  it('every constant the headers define is printed and equals its TypeScript mirror, and the CNI version lists agree', () => {
    expect(constantsMismatches(c, typeScriptMirror(), definedIn())).toEqual([]);
  });

  it("enum sl_event_type numbers the monitor's EVENT_TYPE_NAMES from 1, in their order", () => {
    expect(Object.keys(EVENT_TYPES).map(Number)).toEqual(EVENT_TYPE_NAMES.map((_, i) => i + 1));
    expect(Object.values(EVENT_TYPES)).toEqual([...EVENT_TYPE_NAMES]);
    expect(c.numbers.SL_EV_LB_TRANSLATE).toBe(1);
    expect(c.numbers.SL_EV_SOCK_DESTROY).toBe(EVENT_TYPE_NAMES.length);
  });

  it('event reasons are kebab-case names, each once, numbered from 1 (0 is none)', () => {
    const names = Object.values(EVENT_REASONS) as string[];
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^[a-z]+(-[a-z]+)*$/);
    expect(Math.min(...Object.keys(EVENT_REASONS).map(Number))).toBe(1);
    expect(c.numbers.SL_REASON_BACKEND_GONE).toBe(26);
  });

  it('enum sl_ep_stat numbers the members of struct sl_ep_stats in their order', () => {
    expect(epStatsCodec.layout.fields.map((f) => camel(f.name))).toEqual([...EP_STATS]);
  });
});

describe('the constants check fails when one side changes alone', () => {
  const c = readCConstants();
  const ts = typeScriptMirror();
  const defined = definedIn();
  const edited = (edit: (c: CConstants) => void): CConstants => {
    const copy = structuredClone(c);
    edit(copy);
    return copy;
  };

  it('a value changed in C', () => {
    expect(
      constantsMismatches(
        edited((x) => (x.numbers.SL_POL_TPROXY = 64)),
        ts,
        defined,
      ),
    ).toEqual(['SL_POL_TPROXY is 64 in C, 32 in TypeScript']);
  });

  it('a constant added in C only', () => {
    expect(
      constantsMismatches(
        edited((x) => (x.numbers.SL_CNT_NEW = 8)),
        ts,
        defined,
      ),
    ).toEqual(['SL_CNT_NEW = 8 in C has no TypeScript mirror']);
  });

  it('a constant gone from C that TypeScript still mirrors', () => {
    expect(
      constantsMismatches(
        edited((x) => delete x.numbers.SL_MODE_AMBIENT),
        ts,
        defined,
      ),
    ).toEqual([
      'SL_MODE_AMBIENT is mirrored in TypeScript (2) but C does not print it',
      'SL_MODE_AMBIENT is defined in the C headers but test/c/contract-constants.c does not print it',
    ]);
  });

  it('a CNI version the plugin accepts that the agent does not', () => {
    expect(
      constantsMismatches(
        edited((x) => x.cniAccepted.push('1.2.0')),
        ts,
        defined,
      ),
    ).toEqual([
      'the plugin accepts CNI versions ["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0","1.2.0"], src/cni/spec.ts ["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]',
    ]);
  });

  describe('built from edited headers', () => {
    let dir = '';
    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-contract-constants-'));
    });
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    /**
     * Copies the printer and the headers it reads, applies the edits, builds and runs it. `find`
     * matches across any run of blanks (clang-format aligns macro values with tabs).
     */
    function buildEdited(edits: Array<{ file: string; find: string; replace: string }>): { c: CConstants; defined: string[] } {
      for (const d of ['test/c', 'bpf/lib', 'cni']) fs.cpSync(path.join(ROOT, d), path.join(dir, d), { recursive: true });
      for (const e of edits) {
        const file = path.join(dir, e.file);
        const text = fs.readFileSync(file, 'utf8');
        const find = new RegExp(e.find.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/[ \t]+/g, '[ \\t]+'));
        if (!find.test(text)) throw new Error(`edit of ${e.file} does not apply: "${e.find}" not found`);
        fs.writeFileSync(file, text.replace(find, e.replace));
      }
      const bin = path.join(dir, 'contract-constants');
      execFileSync(
        'cc',
        [
          '-O2',
          '-Wall',
          '-Werror',
          `-I${path.join(dir, 'cni')}`,
          '-o',
          bin,
          path.join(dir, 'test/c/contract-constants.c'),
          path.join(dir, 'cni/cni-spec.c'),
          path.join(dir, 'cni/buf.c'),
        ],
        { stdio: 'pipe', timeout: 60_000 },
      );
      return { c: readCConstants(bin), defined: definedIn(dir) };
    }

    it('a port renumbered, a counter and a flag added in the headers are each reported', () => {
      const built = buildEdited([
        { file: 'bpf/lib/mesh_consts.h', find: '#define SL_PORT_HBONE 15008', replace: '#define SL_PORT_HBONE 15009' },
        { file: 'bpf/lib/verdicts.h', find: '\tSL_CNT_MAX = 10,', replace: '\tSL_CNT_REDIRECT_LOOP = 10,\n\tSL_CNT_MAX = 11,' },
        {
          file: 'bpf/lib/shared.h',
          find: '#define SL_POL_TPROXY (1 << 5)',
          replace: '#define SL_POL_TPROXY (1 << 5)\n#define SL_POL_FUTURE (1 << 6)',
        },
      ]);
      expect(constantsMismatches(built.c, ts, built.defined)).toEqual([
        'SL_CNT_MAX is 11 in C, 10 in TypeScript',
        'SL_PORT_HBONE is 15009 in C, 15008 in TypeScript',
        'SL_POL_FUTURE is defined in the C headers but test/c/contract-constants.c does not print it',
        'SL_CNT_REDIRECT_LOOP is defined in the C headers but test/c/contract-constants.c does not print it',
      ]);
    });
  });
});
