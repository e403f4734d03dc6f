/* The benchmarks' command lines: Node's util.parseArgs in strict mode, the conversions their
 * options share (an integer in a range, a comma-separated list of them, `--pin CPU,CPU|none`) and
 * run.ts's options, which `make bench` passes to api.ts and scale.ts as well.
 * Apart from lib.ts because that one loads the harness and the agent's modules: this one has no
 * side effects at load, so test/unit/bench-args.test.ts can import it alone.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

/** The options every connect-latency benchmark has (run.ts, scale.ts, capture.ts, monitor.ts), each with its own defaults. */
export const LATENCY_OPTIONS = {
  quick: { type: 'boolean' },
  count: { type: 'string' },
  warmup: { type: 'string' },
  rounds: { type: 'string' },
  out: { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

/**
 * run.ts's options (its header says what each means). `make bench BENCH_ARGS=…` gives the same
 * arguments to run.ts, api.ts and scale.ts, so those two accept all of these: the ones they also
 * define (`--quick`, `--out`, …) with their own meaning, the others ignored.
 */
export const RUN_OPTIONS = {
  ...LATENCY_OPTIONS,
  sizes: { type: 'string' },
  concurrency: { type: 'string' },
  'sync-services': { type: 'string' },
  'sync-endpoints': { type: 'string' },
  'sync-starts': { type: 'string' },
  updates: { type: 'string' },
  'skip-latency': { type: 'boolean' },
  'skip-sync': { type: 'boolean' },
  pin: { type: 'string' },
  'no-pin': { type: 'boolean' },
  'from-json': { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

/**
 * The options of argv, parsed strictly: an unknown option, a missing value, a value given to a flag
 * or a bare argument throws Node's TypeError naming it (ERR_PARSE_ARGS_*). `-h`/`--help` prints
 * the header comment of `file` (the script's own) and exits.
 */
export function parseOptions<O extends ParseArgsOptionsConfig>(argv: string[], options: O, file: string) {
  const { values } = parseArgs({
    args: argv,
    options: { ...options, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: false,
  });
  // the type of values depends on O, which TypeScript does not resolve here
  if ((values as { help?: boolean }).help) printHelp(file);
  return values;
}

/** Prints the header comment of a benchmark's file (its --help) and exits. */
export function printHelp(file: string): never {
  process.stdout.write(fs.readFileSync(file, 'utf8').split('*/')[0] + '*/\n');
  return process.exit(0);
}

/** The bounds of an integer option; defaults: 0 and Number.MAX_SAFE_INTEGER. */
export interface IntRange {
  min?: number;
  max?: number;
}

/**
 * The integer of option `name`, from its text, an environment variable's or a default (a number);
 * throws a RangeError naming the option unless it is a whole number within `range`.
 */
export function intArg(name: string, raw: string | number, range: IntRange = {}): number {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = range;
  const v = toInt(String(raw), min, max);
  if (v === undefined) throw new RangeError(`${name} ${JSON.stringify(String(raw))} is not an integer from ${min} to ${max}`);
  return v;
}

/** A comma-separated list of integers (`--sizes 1,1000`), each one checked as intArg does. */
export function intListArg(name: string, raw: string, range: IntRange = {}): number[] {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = range;
  return raw.split(',').map((s) => {
    const v = toInt(s, min, max);
    if (v === undefined)
      throw new RangeError(`${name} ${JSON.stringify(raw)}: ${JSON.stringify(s)} is not an integer from ${min} to ${max}`);
    return v;
  });
}

/**
 * `--pin CPU,CPU` as two CPU numbers, or undefined for `none` (no pinning). Options: `form`, what
 * the two CPUs are, for the error message (default: `CPU,CPU`).
 */
export function pinArg(name: string, raw: string, opts: { form?: string } = {}): [number, number] | undefined {
  if (raw === 'none') return undefined;
  const m = /^(\d+),(\d+)$/.exec(raw);
  if (!m) throw new RangeError(`${name} takes ${opts.form ?? 'CPU,CPU'} or none, got ${JSON.stringify(raw)}`);
  return [Number(m[1]), Number(m[2])];
}

/**
 * The pinning of `--pin CPU,CPU|none` and `--no-pin` (run.ts, capture.ts): none with --no-pin,
 * else --pin, else `env` (an environment variable's value, when not empty), else CPUs 0 and 1 when
 * the machine has two or more. Both options at once are an error rather than the last one winning.
 * Options: `form` as pinArg's, `env`.
 */
export function pinOption(
  values: { pin?: string; 'no-pin'?: boolean },
  opts: { form?: string; env?: string } = {},
): [number, number] | undefined {
  if (values['no-pin'] && values.pin !== undefined) throw new TypeError('--pin and --no-pin contradict each other: give one');
  if (values['no-pin']) return undefined;
  const raw = values.pin ?? (opts.env || undefined);
  if (raw === undefined) return os.cpus().length >= 2 ? [0, 1] : undefined;
  return pinArg('--pin', raw, opts);
}

/** The whole number s (blanks around it allowed) if it is from min to max; private. */
function toInt(s: string, min: number, max: number): number | undefined {
  if (!/^\s*\d+\s*$/.test(s)) return undefined;
  const v = Number(s);
  return Number.isSafeInteger(v) && v >= min && v <= max ? v : undefined;
}
