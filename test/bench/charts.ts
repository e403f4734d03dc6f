/* The benchmark results as SVG charts (`make bench` runs it last; alone:
 * `node_modules/.bin/tsx test/bench/charts.ts [--in build/bench] [--out docs]`).
 *
 * Reads what the benches wrote and draws, with vega-lite compiled to vega and rendered in Node
 * (renderer 'none', no browser):
 *   results.json (test/bench/run.ts)     → bench-connect-latency.svg: TCP connect latency from a
 *                                           pod vs number of Services, sluice / iptables / direct
 *   capture.json (test/bench/capture.ts) → bench-sidecar-latency.svg: request latency through the
 *                                           sidecar by percentile, sluice vs Istio's iptables
 *   cni-add.json (test/bench/cni-add.ts) → bench-cni-add.svg: CNI ADD time per plugin exec
 * A missing input is reported and skipped; none at all is an error. Each chart's subtitle names
 * the run (rounds, counts) and the machine's load average while it ran.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite' with { 'resolution-mode': 'import' };

// ---------------------------------------------------------------------------------------------
// inputs: only the fields read here

/** results.json of test/bench/run.ts */
export interface LbResults {
  opts?: { rounds?: number; count?: number };
  env?: { kernel?: string; cpus?: string };
  sizes: Array<{ size: number; runs: Record<string, Array<{ connect_median_us: number }>> }>;
  /** 1-minute load average at the start of every measured run */
  loadAvgs?: number[];
}

/** capture.json of test/bench/capture.ts */
export interface CaptureResults {
  opts?: { rounds?: number; count?: number };
  loadAvg?: { before: number; after: number };
  samples: Array<{
    round: number;
    variant: string;
    lat: { op_median_us: number | null; op_p99_us: number | null; op_percentiles_us?: Array<[number, number]> };
  }>;
}

/** cni-add.json of test/bench/cni-add.ts */
export interface CniAddResults {
  pods?: number;
  loadAvg?: { before: number; after: number };
  samples: Array<{ chain: 'A' | 'B'; add: Record<string, number>; floor?: number }>;
  agent?: { add: number[] };
}

// ---------------------------------------------------------------------------------------------
// series names (the legends; the unit test looks for them in the SVG)

/** connect chart: run.ts mode → legend name */
export const CONNECT_SERIES: Record<string, string> = {
  sluice: 'sluice (Service VIP)',
  iptables: 'iptables (Service VIP, kube-proxy rules)',
  direct: 'direct (pod IP, sluice attached)',
};

/** sidecar chart: capture.ts variant → legend name */
export const SIDECAR_SERIES: Record<string, string> = {
  sluice: 'sluice capture',
  iptables: "iptables REDIRECT (Istio's rules)",
  direct: 'no capture, no sidecar (floor)',
};

/** CNI chart rows, top to bottom */
export const CNI_ROWS = {
  bridgeA: 'bridge ADD (conflist: bridge)',
  bridgeB: 'bridge ADD (conflist: bridge, sluice-cni)',
  sluice: 'sluice-cni ADD',
  agent: '… of which the agent handler',
  floor: 'process start floor (nsenter … true)',
} as const;

const COLORS = { sluice: '#1b7f5b', iptables: '#c8553d', direct: '#7a7f87' };

// ---------------------------------------------------------------------------------------------
// helpers

function median(xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const loadText = (xs: number[]) =>
  xs.length
    ? `1-min load average ${median(xs).toFixed(1)} (max ${Math.max(...xs).toFixed(1)}) during the run`
    : 'load average not recorded';

/* Without a canvas, vega estimates text as 0.8 em per character, wider than it renders: titles
 * and subtitle lines are kept short (about 70 characters) so the SVG is not padded far past
 * the plot. */
const BASE = {
  $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
  background: 'white',
  padding: 12,
  config: {
    font: 'sans-serif',
    title: { anchor: 'start', fontSize: 13, subtitleFontSize: 11, subtitleColor: '#555' },
    legend: { orient: 'bottom', columns: 1, labelLimit: 480 },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// the charts

/** Connect latency median vs number of Services; rules span the per-round medians' range. */
export function connectLatencySpec(r: LbResults): TopLevelSpec {
  const rows: Array<Record<string, unknown>> = [];
  for (const s of [...r.sizes].sort((a, b) => a.size - b.size)) {
    for (const [mode, series] of Object.entries(CONNECT_SERIES)) {
      const meds = (s.runs[mode] ?? []).map((x) => x.connect_median_us);
      if (!meds.length) continue;
      rows.push({
        services: s.size.toLocaleString('en-US'),
        order: s.size,
        series,
        median: median(meds),
        low: Math.min(...meds),
        high: Math.max(...meds),
      });
    }
  }
  if (!rows.length) throw new RangeError('results.json holds no connect runs of sluice, iptables or direct');
  const rounds = r.opts?.rounds ?? Math.max(...r.sizes.map((s) => s.runs.sluice?.length ?? 0));
  const sizes = [...new Set(rows.map((x) => x.services as string))];
  return {
    ...BASE,
    title: {
      text: 'TCP connect latency from a pod vs Services (lower is better)',
      subtitle: [
        `median of ${rounds} interleaved rounds × ${(r.opts?.count ?? NaN).toLocaleString('en-US')} connects from one pod`,
        'bars: range of the per-round medians',
        `${r.env?.cpus ?? '?'} CPUs, kernel ${r.env?.kernel ?? '?'}`,
        loadText(r.loadAvgs ?? []),
      ],
    },
    width: 600,
    height: 300,
    data: { values: rows },
    encoding: {
      x: { field: 'services', type: 'ordinal', sort: sizes, title: 'Services on the node', axis: { labelAngle: 0 } },
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        scale: { domain: Object.values(CONNECT_SERIES), range: [COLORS.sluice, COLORS.iptables, COLORS.direct] },
      },
    },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: { y: { field: 'median', type: 'quantitative', title: 'connect latency, median µs' } },
      },
      { mark: { type: 'rule', strokeWidth: 2 }, encoding: { y: { field: 'low', type: 'quantitative' }, y2: { field: 'high' } } },
      // value labels placed apart, since the lines run close: direct's below right, sluice's
      // above right, iptables' above left
      ...(
        [
          [CONNECT_SERIES.direct, 'left', 6, 10],
          [CONNECT_SERIES.sluice, 'left', 6, -8],
          [CONNECT_SERIES.iptables, 'right', -6, -8],
        ] as const
      ).map(([series, align, dx, dy]) => ({
        transform: [{ filter: { field: 'series', equal: series } }],
        mark: { type: 'text' as const, align, dx, dy, fontSize: 10 },
        encoding: {
          y: { field: 'median', type: 'quantitative' as const },
          text: { field: 'median', type: 'quantitative' as const, format: '.0f' },
        },
      })),
    ],
  };
}

/** -log10(1 - p): 1 at p90, 2 at p99, 3 at p99.9 (the usual latency-percentile axis). */
const nines = (pct: number) => -Math.log10(1 - pct / 100);

/** Request latency by percentile: per variant, the median over rounds of each percentile. */
export function sidecarLatencySpec(r: CaptureResults): TopLevelSpec {
  const rows: Array<Record<string, unknown>> = [];
  for (const [variant, series] of Object.entries(SIDECAR_SERIES)) {
    const runs = r.samples.filter((s) => s.variant === variant).map((s) => s.lat);
    if (!runs.length) continue;
    // Runs without --percentiles still give two points of the distribution: median and p99.
    const points = (l: (typeof runs)[number]): Array<[number, number]> =>
      l.op_percentiles_us ?? [
        [50, l.op_median_us ?? NaN],
        [99, l.op_p99_us ?? NaN],
      ];
    const byPct = new Map<number, number[]>();
    for (const l of runs) for (const [p, us] of points(l)) byPct.set(p, [...(byPct.get(p) ?? []), us]);
    for (const [p, us] of byPct) {
      if (p >= 100) continue;
      rows.push({ series, percentile: p, nines: nines(p), us: median(us) });
    }
  }
  if (!rows.length) throw new RangeError('capture.json holds no latency pass of sluice, iptables or direct');
  const rounds = r.opts?.rounds ?? new Set(r.samples.map((s) => s.round)).size;
  const load = r.loadAvg ? [r.loadAvg.before, r.loadAvg.after] : [];
  const ticks = [nines(50), 1, 2, 3].filter((t) => t <= Math.max(...rows.map((x) => x.nines as number)) + 1e-9);
  return {
    ...BASE,
    title: {
      text: 'Sidecar request latency by percentile (lower is better)',
      subtitle: [
        'app → capture → the same stand-in sidecar → server pod',
        `${(r.opts?.count ?? NaN).toLocaleString('en-US')} requests per round at concurrency 1`,
        `each percentile: median over ${rounds} interleaved rounds`,
        load.length
          ? `1-min load average ${load[0].toFixed(1)} before, ${load[1].toFixed(1)} after`
          : 'load average not recorded',
      ],
    },
    width: 600,
    height: 300,
    data: { values: rows },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'nines',
        type: 'quantitative',
        title: 'percentile of requests',
        scale: { nice: false, padding: 12 },
        axis: { values: ticks, labelExpr: "'p' + format(100 - 100 * pow(10, -datum.value), '.3~r')" },
      },
      y: { field: 'us', type: 'quantitative', title: 'request latency µs (log scale)', scale: { type: 'log', nice: false } },
      color: {
        field: 'series',
        type: 'nominal',
        title: null,
        scale: { domain: Object.values(SIDECAR_SERIES), range: [COLORS.sluice, COLORS.iptables, COLORS.direct] },
      },
      tooltip: [{ field: 'series' }, { field: 'percentile' }, { field: 'us', format: '.1f' }],
    },
  };
}

/** CNI ADD time of each plugin exec over the pods, as box plots (whiskers: min and max). */
export function cniAddSpec(r: CniAddResults): TopLevelSpec {
  const rows: Array<{ row: string; who: string; ms: number }> = [];
  const add = (row: string, who: string, ms: number | undefined) => {
    if (typeof ms === 'number' && Number.isFinite(ms)) rows.push({ row, who, ms });
  };
  for (const s of r.samples) {
    add(s.chain === 'A' ? CNI_ROWS.bridgeA : CNI_ROWS.bridgeB, 'reference bridge plugin (with host-local)', s.add.bridge);
    if (s.chain === 'B') add(CNI_ROWS.sluice, 'sluice', s.add['sluice-cni']);
    add(CNI_ROWS.floor, 'process start', s.floor);
  }
  for (const ms of r.agent?.add ?? []) add(CNI_ROWS.agent, 'sluice', ms);
  if (!rows.some((x) => x.row === CNI_ROWS.sluice)) throw new RangeError('cni-add.json holds no sluice-cni ADD times');
  const pods = r.pods ?? r.samples.length;
  const load = r.loadAvg ? [r.loadAvg.before, r.loadAvg.after] : [];
  return {
    ...BASE,
    title: {
      text: 'CNI ADD time per plugin exec (lower is better)',
      subtitle: [
        `${pods} pods alternating the two conflists`,
        'each plugin exec timed from spawn to exit',
        'boxes: quartiles, whiskers: min–max',
        load.length
          ? `1-min load average ${load[0].toFixed(1)} before, ${load[1].toFixed(1)} after`
          : 'load average not recorded',
      ],
    },
    width: 460, // the row labels' estimated width comes on top
    height: 220,
    data: { values: rows },
    mark: { type: 'boxplot', extent: 'min-max', median: { color: 'white' } },
    encoding: {
      y: { field: 'row', type: 'nominal', sort: Object.values(CNI_ROWS), title: null, axis: { labelLimit: 480 } },
      x: { field: 'ms', type: 'quantitative', title: 'ms' },
      color: {
        field: 'who',
        type: 'nominal',
        title: null,
        scale: {
          domain: ['sluice', 'reference bridge plugin (with host-local)', 'process start'],
          range: [COLORS.sluice, COLORS.direct, '#b9bcc2'],
        },
      },
    },
  };
}

/** Compiles a vega-lite spec and renders it to SVG text in Node (no browser, no canvas). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  // vega and vega-lite are ES modules; this file is compiled as CommonJS.
  const vega = await import('vega');
  const vl = await import('vega-lite');
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// ---------------------------------------------------------------------------------------------
// command line

export const CHARTS = [
  {
    input: 'results.json',
    output: 'bench-connect-latency.svg',
    by: 'test/bench/run.ts',
    spec: (j: unknown) => connectLatencySpec(j as LbResults),
  },
  {
    input: 'capture.json',
    output: 'bench-sidecar-latency.svg',
    by: 'test/bench/capture.ts',
    spec: (j: unknown) => sidecarLatencySpec(j as CaptureResults),
  },
  {
    input: 'cni-add.json',
    output: 'bench-cni-add.svg',
    by: 'test/bench/cni-add.ts',
    spec: (j: unknown) => cniAddSpec(j as CniAddResults),
  },
];

/** Draws every chart whose input exists in `inDir` into `outDir`; returns the files written. */
export async function drawCharts(
  inDir: string,
  outDir: string,
  log: (line: string) => void = () => undefined,
): Promise<string[]> {
  const written: string[] = [];
  for (const c of CHARTS) {
    const input = path.join(inDir, c.input);
    if (!fs.existsSync(input)) {
      log(`skipped ${c.output}: no ${input} (written by ${c.by})`);
      continue;
    }
    let json: unknown;
    try {
      json = JSON.parse(fs.readFileSync(input, 'utf8'));
    } catch (e) {
      throw new SyntaxError(`Cannot read ${input}: ${(e as Error).message}`);
    }
    const svg = await renderSvg(c.spec(json));
    fs.mkdirSync(outDir, { recursive: true });
    const output = path.join(outDir, c.output);
    fs.writeFileSync(`${output}.tmp`, svg.endsWith('\n') ? svg : `${svg}\n`);
    fs.renameSync(`${output}.tmp`, output);
    written.push(output);
    log(`wrote ${output} (from ${input})`);
  }
  return written;
}

async function main(argv: string[]): Promise<number> {
  const root = path.resolve(__dirname, '../..');
  let inDir = path.join(root, 'build/bench');
  let outDir = path.join(root, 'docs');
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${argv[i - 1]} needs a directory`);
      return path.resolve(v);
    };
    if (argv[i] === '--in') inDir = value();
    else if (argv[i] === '--out') outDir = value();
    else throw new Error(`unknown option ${argv[i]} (charts.ts [--in build/bench] [--out docs])`);
  }
  const written = await drawCharts(inDir, outDir, (l) => process.stderr.write(`[charts] ${l}\n`));
  if (!written.length) {
    process.stderr.write(`[charts] no benchmark results in ${inDir}: run the benches first (make bench)\n`);
    return 1;
  }
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`charts failed: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
