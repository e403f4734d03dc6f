/* The benchmark charts (test/bench/charts.ts) drawn from small fixture results: well-formed SVG
 * (checked by a real XML parser, Python's expat), carrying every series name, with values computed
 * from the inputs (medians over rounds), and refusing inputs with nothing to draw.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CNI_ROWS,
  CONNECT_SERIES,
  SIDECAR_SERIES,
  cniAddSpec,
  connectLatencySpec,
  drawCharts,
  sidecarLatencySpec,
  type CaptureResults,
  type LbResults,
} from '../bench/charts';

const FIXTURES = path.join(__dirname, 'fixtures/bench');
const fixture = <T>(name: string): T => JSON.parse(fs.readFileSync(path.join(FIXTURES, name), 'utf8')) as T;

/** Parses with expat; returns the parser's complaint, or '' when the document is well-formed. */
function xmlError(file: string): string {
  const r = spawnSync('python3', ['-c', 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])', file], {
    encoding: 'utf8',
  });
  if (r.error) throw new Error(`Cannot run python3 to parse ${file}: ${r.error.message}`);
  return r.status === 0 ? '' : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
}

/** The lines of text the SVG shows: each <text>, or each <tspan> of a multi-line one, entities decoded. */
function texts(svg: string): string[] {
  const decode = (s: string) =>
    s
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&quot;/g, '"')
      .replace(/&#39;|&apos;/g, "'")
      .replace(/&amp;/g, '&');
  return [...svg.matchAll(/<text[^>]*>(.*?)<\/text>/g)].flatMap((m) =>
    m[1].includes('<tspan') ? [...m[1].matchAll(/<tspan[^>]*>([^<]*)<\/tspan>/g)].map((t) => decode(t[1])) : [decode(m[1])],
  );
}

type Row = Record<string, unknown>;
const rowsOf = (spec: unknown) => (spec as { data: { values: Row[] } }).data.values;

describe('benchmark charts', () => {
  let out: string;
  let written: string[];

  beforeAll(async () => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-charts-'));
    written = await drawCharts(FIXTURES, out);
  }, 60000);

  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  it('draws one SVG per results file', () => {
    expect(written.map((f) => path.basename(f)).sort()).toEqual([
      'bench-cni-add.svg',
      'bench-connect-latency.svg',
      'bench-sidecar-latency.svg',
    ]);
    expect(fs.readdirSync(out).sort()).toEqual(written.map((f) => path.basename(f)).sort()); // no temp file left
  });

  it('every SVG is well-formed XML with an <svg> root', () => {
    for (const f of written) {
      expect(xmlError(f), f).toBe('');
      expect(fs.readFileSync(f, 'utf8')).toMatch(/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    }
  });

  it('the expat check does catch a broken document', () => {
    const bad = path.join(out, 'broken.svg.txt');
    fs.writeFileSync(bad, fs.readFileSync(written[0], 'utf8').replace('</svg>', ''));
    try {
      expect(xmlError(bad)).not.toBe('');
    } finally {
      fs.rmSync(bad);
    }
  });

  it('each chart names its series, its title and the run', () => {
    const svg = (name: string) => texts(fs.readFileSync(path.join(out, name), 'utf8'));
    const connect = svg('bench-connect-latency.svg');
    for (const s of Object.values(CONNECT_SERIES)) expect(connect).toContain(s);
    expect(connect).toContain('TCP connect latency from a pod vs Services (lower is better)');
    expect(connect).toEqual(expect.arrayContaining(['1', '10,000'])); // the sizes, as axis labels
    expect(connect).toEqual(
      expect.arrayContaining(['2 CPUs, kernel 6.18.0-fixture', '1-min load average 2.0 (max 2.5) during the run']),
    );
    const sidecar = svg('bench-sidecar-latency.svg');
    for (const s of Object.values(SIDECAR_SERIES)) expect(sidecar).toContain(s);
    expect(sidecar).toContain('1-min load average 3.2 before, 3.8 after');
    expect(sidecar).toEqual(expect.arrayContaining(['p50', 'p90', 'p99', 'p99.9']));
    const cni = svg('bench-cni-add.svg');
    for (const s of Object.values(CNI_ROWS)) expect(cni).toContain(s);
    expect(cni).toContain('sluice');
  });

  it('connect points are the medians over rounds, with the per-round range', () => {
    const rows = rowsOf(connectLatencySpec(fixture<LbResults>('results.json')));
    expect(rows).toHaveLength(6); // 2 sizes × sluice, iptables, direct (bare and direct-ipt not drawn)
    const at = (services: string, series: string) => rows.find((r) => r.services === services && r.series === series);
    expect(at('1', CONNECT_SERIES.sluice)).toMatchObject({ median: 36.3, low: 36.1, high: 36.5 });
    expect(at('10,000', CONNECT_SERIES.iptables)).toMatchObject({ median: 214.7, low: 207.5, high: 221.9 });
  });

  it('sidecar percentiles are medians over rounds; a round without --percentiles still gives p50 and p99', () => {
    const rows = rowsOf(sidecarLatencySpec(fixture<CaptureResults>('capture.json')));
    const at = (series: string, percentile: number) => rows.find((r) => r.series === series && r.percentile === percentile)?.us;
    expect(at(SIDECAR_SERIES.sluice, 99.9)).toBe(3100);
    expect(at(SIDECAR_SERIES.iptables, 50)).toBe(238); // 240 and 236 (the round without percentiles)
    expect(at(SIDECAR_SERIES.iptables, 10)).toBe(180); // only the round with percentiles has p10
    expect(rows.find((r) => r.percentile === 99)?.nines).toBeCloseTo(2, 10);
  });

  it('CNI rows hold every sample of each plugin exec', () => {
    const rows = rowsOf(cniAddSpec(fixture('cni-add.json')));
    const of = (row: string) => rows.filter((r) => r.row === row).map((r) => r.ms);
    expect(of(CNI_ROWS.sluice)).toEqual([5.2, 8.6]);
    expect(of(CNI_ROWS.bridgeA)).toEqual([13.9, 18.7]);
    expect(of(CNI_ROWS.agent)).toEqual([0.95, 2.3]);
    expect(of(CNI_ROWS.floor)).toHaveLength(4);
  });

  it('inputs with nothing to draw are refused, and a directory without results draws nothing', async () => {
    expect(() => connectLatencySpec({ sizes: [{ size: 1, runs: { bare: [{ connect_median_us: 1 }] } }] })).toThrow(RangeError);
    expect(() => sidecarLatencySpec({ samples: [] })).toThrow(/no latency pass/);
    expect(() => cniAddSpec({ samples: [{ chain: 'A', add: { bridge: 1 } }] })).toThrow(/no sluice-cni ADD/);
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-charts-empty-'));
    try {
      const lines: string[] = [];
      expect(await drawCharts(empty, path.join(empty, 'out'), (l) => lines.push(l))).toEqual([]);
      expect(lines).toHaveLength(3);
      expect(fs.existsSync(path.join(empty, 'out'))).toBe(false);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
