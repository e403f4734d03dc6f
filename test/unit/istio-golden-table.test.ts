/* The golden-driven equivalence suite's own data: every golden is a case or listed with a reason,
 * the goldens parse into their IPv4/IPv6 restore inputs, and what the table names exists. Runs
 * without root (the kernel suite is test/kernel/istio-golden.test.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ANNOTATION, sidecarPolicy } from '../../src/mesh/sidecar-policy';
import { POL_TPROXY } from '../../src/bpf/layout';
import { caseProbes, GOLDEN_CASES, isTproxyCase, NOT_EXPRESSIBLE, STATUS_ANNOTATION } from '../kernel/istio-golden-cases';
import { parseGolden, readGolden, restoreInput, tproxyMark } from '../kernel/istio-golden';
import { KNOWN_DIFFERENCES } from '../kernel/istio-known-differences';
import { annotatedPorts, comparable, outcome, probeMatrix, type Probe } from '../kernel/istio-probes';

const ROOT = path.resolve(__dirname, '../..');

function goldenFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, d), { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.golden')) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

const familiesOf = (golden: string) => (readGolden(golden).v6 ? ([4, 6] as const) : ([4] as const));

describe("Istio's goldens in the case table", () => {
  it('every golden copied from istio/istio is either a case or listed with a reason, exactly once', () => {
    const upstream = goldenFiles('test/istio-golden');
    expect(upstream).toHaveLength(36);
    const named = [...GOLDEN_CASES.map((c) => c.golden), ...NOT_EXPRESSIBLE.map((n) => n.golden)].filter((g) =>
      g.startsWith('test/istio-golden/'),
    );
    expect([...named].sort()).toEqual(upstream);
    for (const n of NOT_EXPRESSIBLE) expect(n.reason.length, n.golden).toBeGreaterThan(20);
  });

  it('every derived rule file is a case', () => {
    const derived = goldenFiles('test/istio-derived');
    expect(
      GOLDEN_CASES.map((c) => c.golden)
        .filter((g) => g.startsWith('test/istio-derived/'))
        .sort(),
    ).toEqual(derived);
  });

  it("every golden parses; istio-cni's are IPv4 only, istio-iptables' have IPv6 rules exactly when the run enabled IPv6", () => {
    for (const g of [...goldenFiles('test/istio-golden'), ...goldenFiles('test/istio-derived')]) {
      const r = readGolden(g);
      expect(
        r.v4.some((t) => t.name === 'nat'),
        g,
      ).toBe(true);
      if (g.includes('/cni/')) expect(r.v6, g).toBeUndefined();
    }
    expect(readGolden('test/istio-golden/tools/istio-iptables/pkg/capture/testdata/ipv6-inbound-ports.golden').v6).toBeDefined();
    expect(readGolden('test/istio-golden/tools/istio-iptables/pkg/capture/testdata/empty.golden').v6).toBeUndefined();
  });

  it("sluice accepts every case's annotations (a refused pod would be compared with nothing)", () => {
    for (const c of GOLDEN_CASES) {
      expect(c.annotations[STATUS_ANNOTATION], c.golden).toBeDefined();
      expect(sidecarPolicy(c.annotations, ['10.1.0.5', 'fd00:1::5']).refused, c.golden).toBeUndefined();
    }
  });

  it('every golden with a TPROXY target is a TPROXY case (mark 1337), and sluice enrols it in TPROXY mode', () => {
    const all = [...GOLDEN_CASES.map((c) => c.golden), ...NOT_EXPRESSIBLE.map((n) => n.golden)];
    const withTarget = all.filter((g) => tproxyMark(readGolden(g).v4) !== undefined);
    expect(withTarget.map((g) => path.basename(g)).sort()).toEqual(
      [
        'custom-uid-tproxy.txt.golden',
        'inbound-ports-tproxy.golden',
        'inbound-ports-wildcard-tproxy.golden',
        'tproxy.golden',
        'tproxy.txt.golden',
      ].sort(),
    );
    for (const g of withTarget) {
      const c = GOLDEN_CASES.find((x) => x.golden === g);
      expect(c && isTproxyCase(c), g).toBe(true);
      expect(tproxyMark(readGolden(g).v4), g).toBe(1337);
    }
    for (const c of GOLDEN_CASES) {
      expect(isTproxyCase(c), c.golden).toBe(withTarget.includes(c.golden));
      const policy = sidecarPolicy(c.annotations, ['10.1.0.5']).policy!;
      expect((policy.flags & POL_TPROXY) !== 0, c.golden).toBe(isTproxyCase(c));
    }
    expect(sidecarPolicy({ [ANNOTATION.interceptionMode]: 'TPROXY' }, ['10.1.0.5']).refused).toBeUndefined();
  });

  it('deviations and known differences name probes their case runs, each once', () => {
    const seen = new Set<string>();
    for (const c of GOLDEN_CASES) {
      const names = new Set(caseProbes(c, [...familiesOf(c.golden)]).map((p) => p.name));
      for (const d of c.deviations) {
        expect(names.has(d.probe), `${c.golden}: deviation ${d.probe}`).toBe(true);
        expect(seen.has(`${c.golden} ${d.probe}`)).toBe(false);
        seen.add(`${c.golden} ${d.probe}`);
      }
    }
    for (const k of KNOWN_DIFFERENCES) {
      const c = GOLDEN_CASES.find((x) => x.golden === k.golden);
      expect(c, `known difference for ${k.golden}, which is not a case`).toBeDefined();
      const names = new Set(caseProbes(c!, [...familiesOf(c!.golden)]).map((p) => p.name));
      expect(names.has(k.probe), `${k.golden}: known difference ${k.probe}`).toBe(true);
      expect(seen.has(`${k.golden} ${k.probe}`), `${k.golden} ${k.probe} is recorded twice (or also as deliberate)`).toBe(false);
      seen.add(`${k.golden} ${k.probe}`);
      expect(k.istio).not.toBe(k.sluice);
    }
  });
});

describe('golden parsing', () => {
  const v4nat = [
    '* nat',
    '-N ISTIO_OUTPUT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    '-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN',
    'COMMIT',
  ];
  const v6nat = ['* nat', '-N ISTIO_OUTPUT', '-A OUTPUT -j ISTIO_OUTPUT', '-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN', 'COMMIT'];

  it("splits istio-iptables' recorded run at the first repeated table: IPv4 input, then IPv6", () => {
    const g = parseGolden(
      ['iptables-save', 'ip6tables-save', ...v4nat, '* raw', '-N X', 'COMMIT', ...v6nat, 'iptables-save', 'ip6tables-save'].join(
        '\n',
      ),
      'x.golden',
    );
    expect(g.v4.map((t) => t.name)).toEqual(['nat', 'raw']);
    expect(g.v6?.map((t) => t.name)).toEqual(['nat']);
    expect(g.v6?.[0].lines).toContain('-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN');
  });

  it('refuses a file whose recorded calls and restore inputs disagree, or whose split puts an address in the wrong family', () => {
    expect(() =>
      parseGolden(
        ['iptables-save', 'ip6tables-save', ...v4nat, 'iptables-save'].join('\n').replace('127.0.0.6/32', '::6/128'),
        'a.golden',
      ),
    ).toThrow(/IPv4 nat table holds ::6\/128/);
    expect(() =>
      parseGolden(['iptables-save', 'ip6tables-save', ...v4nat, 'iptables-save', 'ip6tables-save'].join('\n'), 'b.golden'),
    ).toThrow(/IPv6 enabled/);
    expect(() => parseGolden([...v4nat, ...v6nat, ...v6nat].join('\n'), 'c.golden')).toThrow(/three times/);
    expect(() => parseGolden(['* nat', 'iptables -t nat -A X', 'COMMIT'].join('\n'), 'd.golden')).toThrow(/d.golden:2/);
    expect(() => parseGolden(['* nat', '-N X'].join('\n'), 'e.golden')).toThrow(/no COMMIT/);
  });

  it('restore input gives every table the golden lacks empty, so loading replaces what an earlier golden left', () => {
    const text = restoreInput(parseGolden(v4nat.join('\n'), 'f.golden').v4);
    expect(text).toContain('*nat\n-N ISTIO_OUTPUT\n');
    for (const t of ['mangle', 'raw', 'filter']) expect(text).toContain(`*${t}\nCOMMIT\n`);
    expect(restoreInput(undefined)).toBe('*nat\nCOMMIT\n*mangle\nCOMMIT\n*raw\nCOMMIT\n*filter\nCOMMIT\n');
  });
});

describe('probes and outcomes', () => {
  it("probe every port a case's annotations name, outbound, on the pod itself and inbound", () => {
    const annotations = {
      'traffic.sidecar.istio.io/includeInboundPorts': '1111, 2222',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '5555',
      'traffic.sidecar.istio.io/includeOutboundIPRanges': '*',
    };
    expect(annotatedPorts(annotations)).toEqual([1111, 2222, 5555]);
    const names = probeMatrix({ families: [4], annotations, proxy: { uid: 1337, gid: 1337 } }).map((p) => p.name);
    for (const n of [
      'app → be1:5555',
      'uid 1337 → self:1111',
      'gid 1337 → self:2222',
      'client → self:5555',
      'client → self:15001',
      'uid 1337 from 127.0.0.6 → self:8080',
      'app udp → be1:53',
    ]) {
      expect(names).toContain(n);
    }
    expect(names.some((n) => n.includes('[self6]'))).toBe(false);
  });

  it('write what happened with symbols, so two pods compare equal when they behave alike', () => {
    const symbols = new Map([
      ['self', '10.1.0.5'],
      ['be1', '10.1.0.3'],
      ['be16', 'fd00:1::3'],
      ['VIP', '10.96.0.10'],
    ]);
    const side = { pod: 'meshed', symbols };
    const p = (to: string, proto: Probe['proto'] = 'tcp'): Probe => ({ name: 'x', family: 4, as: 'app', proto, to, port: 8080 });
    expect(
      outcome(
        p('be1'),
        {
          ok: true,
          reply:
            'sidecar sc-meshed via=out orig=10.1.0.3:8080 local=10.1.0.3:8080 peer=10.1.0.5:4000 upstream=be1 10.1.0.5 3000 10.1.0.3 8080',
        },
        side,
      ),
    ).toBe('out be1:8080 > be1');
    expect(
      outcome(
        p('be16'),
        { ok: true, reply: 'sidecar sc-meshed via=out orig=[fd00:1::3]:8080 local=x peer=y upstream=ERR:111:Connection_refused' },
        side,
      ),
    ).toBe('out [be16]:8080 > ERR:111');
    expect(outcome(p('self'), { ok: true, reply: 'app-meshed 10.1.0.5 4000 10.1.0.5 8080' }, side)).toBe('direct app');
    expect(
      outcome(p('be1', 'udp'), { ok: true, reply: 'dns-meshed 127.0.0.1 1 127.0.0.1 15053', peer: '10.1.0.3:53' }, side),
    ).toBe('answered dns-proxy from be1:53');
    expect(outcome(p('be1'), { ok: false, errno: 111 }, side)).toBe('fail 111');
    expect(comparable(p('VIP'), 'out VIP:80 > be1')).toBe('captured (out VIP:80)');
    expect(comparable(p('VIP'), 'fail 111')).toBe('not captured');
    expect(comparable(p('VIP'), 'direct be2')).toBe('not captured');
  });
});
