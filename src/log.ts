/* Structured logs: one JSON object per line on stderr, so `kubectl logs` and jq read them. */

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold: number = order[(process.env.SLUICE_LOG_LEVEL as Level) ?? 'info'] ?? order.info;

/** Sets the lowest level that is written. */
export function setLogLevel(level: Level): void {
  threshold = order[level];
}

function write(level: Level, msg: string, fields?: Fields): void {
  if (order[level] < threshold) return;
  const rec: Fields = { ts: new Date().toISOString(), level, msg, ...fields };
  if (rec.err instanceof Error) rec.err = rec.err.message;
  process.stderr.write(JSON.stringify(rec) + '\n');
}

export const log = {
  debug: (msg: string, fields?: Fields) => write('debug', msg, fields),
  info: (msg: string, fields?: Fields) => write('info', msg, fields),
  warn: (msg: string, fields?: Fields) => write('warn', msg, fields),
  error: (msg: string, fields?: Fields) => write('error', msg, fields),
};
