/* How the demo talks to an operator: a heading per scene, a short line saying what is being
 * shown, then the command as one would type it and its real output, indented. And `check`: the
 * demo asserts what it narrates, so a demo that prints a claim the kernel did not make fails
 * instead of misleading its audience.
 */

const tty = process.stdout.isTTY === true;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (tty ? `\x1b[2m${s}\x1b[0m` : s);

const out = (s: string) => process.stdout.write(s);

/** Output longer than this many lines is cut, with a note saying how much was left out. */
const MAX_LINES = 24;

/** A scene's heading. */
export function scene(title: string): void {
  out(`\n${bold(`== ${title}`)}\n`);
}

/** One line of narration: what the next output shows, or what it means. */
export function say(text: string): void {
  out(`   ${text}\n`);
}

/** A command as an operator would type it, then its output, indented (cut after `maxLines`). */
export function shell(command: string, output: string, opts: { maxLines?: number; exitCode?: number } = {}): void {
  out(`${dim('   $')} ${command}\n`);
  const lines = output.replace(/\s+$/, '').split('\n');
  const max = opts.maxLines ?? MAX_LINES;
  const shown = lines.length > max ? lines.slice(0, max) : lines;
  for (const l of shown) if (l !== '' || shown.length > 1) out(`     ${l}\n`);
  if (lines.length > max) out(dim(`     … ${lines.length - max} more lines\n`));
  if (opts.exitCode !== undefined && opts.exitCode !== 0) out(dim(`     (exit status ${opts.exitCode})\n`));
}

/** A step whose command or config key is not in this build (doctor, monitor, metrics land separately). */
export function notInThisBuild(what: string): void {
  out(`   ${what}: (not in this build)\n`);
}

/** Thrown when what the demo is about to narrate did not happen. */
export class DemoCheckError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DemoCheckError';
  }
}

/** Fails the demo with `what` and the value seen unless `ok`. */
export function check(ok: boolean, what: string, seen?: unknown): asserts ok {
  if (!ok)
    throw new DemoCheckError(
      `demo check failed: ${what}${seen === undefined ? '' : `; seen: ${typeof seen === 'string' ? seen : JSON.stringify(seen)}`}`,
    );
}

/** "be1: 11, be2: 9": how many of `items` each key got, keys sorted. */
export function tally(items: Array<string | undefined>): string {
  const counts = new Map<string, number>();
  for (const k of items) counts.set(k ?? 'failed', (counts.get(k ?? 'failed') ?? 0) + 1);
  return [...counts]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
}
