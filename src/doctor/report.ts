/* What `sluice doctor` prints: one line per check result, `ok`, `warn` or `fail`, with the reason
 * and, when something is wrong, the fix. Any fail makes the exit code 1.
 */

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  /** the check, `group.name` (e.g. `kernel.version`, `pods.mode`); stable, scripts may match it */
  check: string;
  status: CheckStatus;
  /** what is, in one line: the facts that led to the status */
  message: string;
  /** what to do about a warn or fail */
  fix?: string;
}

export function ok(check: string, message: string): CheckResult {
  return { check, status: 'ok', message };
}

export function warn(check: string, message: string, fix?: string): CheckResult {
  return fix === undefined ? { check, status: 'warn', message } : { check, status: 'warn', message, fix };
}

export function fail(check: string, message: string, fix?: string): CheckResult {
  return fix === undefined ? { check, status: 'fail', message } : { check, status: 'fail', message, fix };
}

/** `1 pod`, `2 pods`: counts in messages. */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}

export interface DoctorReport {
  /** false when any check failed */
  healthy: boolean;
  counts: Record<CheckStatus, number>;
  checks: CheckResult[];
}

export function buildReport(checks: CheckResult[]): DoctorReport {
  const counts: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0 };
  for (const c of checks) counts[c.status]++;
  return { healthy: counts.fail === 0, counts, checks };
}

/** 1 when a check failed, else 0 (warnings alone do not fail). */
export function exitCode(report: DoctorReport): number {
  return report.healthy ? 0 : 1;
}

/** `STATUS  check  message — fix: …`, the check column padded; a summary line last. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(0, ...report.checks.map((c) => c.check.length));
  const lines = report.checks.map((c) => {
    const fix = c.fix && c.status !== 'ok' ? ` — fix: ${c.fix}` : '';
    return `${c.status.padEnd(4)}  ${c.check.padEnd(width)}  ${c.message}${fix}`;
  });
  const { ok: n, warn: w, fail: f } = report.counts;
  lines.push(`${f ? 'unhealthy' : 'healthy'}: ${n} ok, ${w} warn, ${f} fail`);
  return lines.join('\n') + '\n';
}
