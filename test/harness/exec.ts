/* Small promise helpers around child_process.spawn (never a shell). */

import { spawn } from 'node:child_process';

export interface RunOpts {
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null. */
  input?: string;
  /** Merged over process.env. */
  env?: Record<string, string>;
  /** The child is SIGKILLed after this long (default 20000). */
  timeoutMs?: number;
  /** Resolve with the non-zero code instead of throwing. */
  allowFail?: boolean;
}

export interface RunResult {
  /** Exit code; 128+signal number when killed by a signal; 127 when it could not be started; 124 on timeout. */
  code: number;
  stdout: string;
  stderr: string;
}

/** Error thrown by run() when the command fails (and allowFail is not set). */
export class RunError extends Error {
  constructor(
    message: string,
    readonly cmd: string[],
    readonly code: number,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'RunError';
  }
}

const MAX_CAPTURE = 64 * 1024 * 1024;

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** Renders a command line for messages. */
export function showCmd(cmd: string[]): string {
  return cmd.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Runs cmd[0] with arguments cmd[1..] and collects its output. */
export function run(cmd: string[], opts: RunOpts = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 20000;
  if (cmd.length === 0) return Promise.reject(new Error('run: empty command'));
  return new Promise<RunResult>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let settled = false;
    let timedOut = false;
    let spawnError: Error | undefined;

    const child = spawn(cmd[0], cmd.slice(1), {
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });

    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);

    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += d;
    });
    child.stderr!.on('data', (d: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += d;
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => {
        /* EPIPE when the child does not read its input: the exit code tells */
      });
      child.stdin!.end(opts.input);
    }

    const finish = (code: number) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (timedOut) {
        code = 124;
        stderr += `\n[run: timed out after ${timeoutMs} ms]`;
      }
      if (spawnError) stderr += `${stderr ? '\n' : ''}[run: ${spawnError.message}]`;
      const res: RunResult = { code, stdout, stderr };
      if (code !== 0 && !opts.allowFail) {
        const what = timedOut ? `timed out after ${timeoutMs} ms` : `exited with code ${code}`;
        reject(
          new RunError(
            `command ${what}: ${showCmd(cmd)}\n${stderr.trim() || stdout.trim().slice(-4000)}`,
            cmd,
            code,
            stdout,
            stderr,
          ),
        );
      } else {
        resolve(res);
      }
    };

    child.on('error', (err) => {
      spawnError = err;
      // 'close' may not follow when spawn itself failed.
      setImmediate(() => finish(127));
    });
    child.on('close', (code, signal) => {
      if (spawnError) return finish(127);
      finish(code ?? (signal ? 128 + (SIGNALS[signal] ?? 0) : 1));
    });
  });
}

/** Sleeps ms milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Calls fn until it returns a truthy value (resolved with it) or timeoutMs passes
 * (rejects with what, plus the last error fn threw).
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const detail = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}
