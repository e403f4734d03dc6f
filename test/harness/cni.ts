/*
 * Executes a CNI network configuration list the way a container runtime does
 * (libcni semantics): plugins run in order for ADD/CHECK and in reverse for DEL,
 * each with its own stdin config built from the plugin conf plus the list's
 * `name` and `cniVersion`, `prevResult` and `runtimeConfig`.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { run, showCmd } from './exec';

/** A CNI network configuration list (the .conflist file's JSON). */
export interface CniConfList {
  cniVersion: string;
  name: string;
  disableCheck?: boolean;
  plugins: CniPluginConf[];
  [key: string]: unknown;
}

/** One plugin's entry in a conflist. */
export interface CniPluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

/** The runtime side of an invocation (libcni's RuntimeConf plus where to find/run the plugins). */
export interface CniRuntimeConf {
  containerId: string;
  /** Path of the container's network namespace (CNI_NETNS); may be '' for DEL when it is gone. */
  netns: string;
  ifName: string;
  /** Extra CNI_ARGS, after IgnoreUnknown=1 (e.g. K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID). */
  args?: Record<string, string>;
  /** Directories searched, in order, for the plugin executables; also CNI_PATH. */
  binDirs: string[];
  /** When set, the plugin processes run in this network namespace (nsenter --net=<path>). */
  runInNetns?: string;
  /** Values for plugins' `capabilities` (injected as `runtimeConfig`), e.g. {portMappings: [...]}. */
  capabilityArgs?: Record<string, unknown>;
  /** Extra environment for the plugin processes. */
  env?: Record<string, string>;
  /** Per plugin invocation (default 30000). */
  timeoutMs?: number;
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK';

/** A CNI result (any version); kept loose on purpose. */
export type CniResult = Record<string, any>;

/** A failed plugin invocation. `cniError` is the parsed error object from stdout when there was one. */
export class CniPluginError extends Error {
  constructor(
    message: string,
    readonly plugin: string,
    readonly command: CniCommand,
    readonly exitCode: number,
    readonly cniError: unknown,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CniPluginError';
  }
}

function validateList(conflist: object): CniConfList {
  const l = conflist as CniConfList;
  if (!l || typeof l.name !== 'string' || !l.name) throw new Error('CNI conflist: missing name');
  if (typeof l.cniVersion !== 'string' || !l.cniVersion) throw new Error('CNI conflist: missing cniVersion');
  if (!Array.isArray(l.plugins) || l.plugins.length === 0) throw new Error('CNI conflist: no plugins');
  for (const p of l.plugins) {
    if (!p || typeof p.type !== 'string' || !p.type) throw new Error('CNI conflist: plugin without type');
  }
  return l;
}

/** Locates a plugin executable in binDirs (like libcni's FindInPath). */
export function findPlugin(type: string, binDirs: string[]): string {
  if (type.includes('/') || type === '.' || type === '..') throw new Error(`invalid CNI plugin type ${JSON.stringify(type)}`);
  for (const dir of binDirs) {
    const p = path.join(dir, type);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  throw new Error(`CNI plugin ${JSON.stringify(type)} not found in ${binDirs.join(':')}`);
}

function versionAtLeast(v: string, want: string): boolean {
  const a = v.split('.').map((x) => parseInt(x, 10) || 0);
  const b = want.split('.').map((x) => parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/** The stdin config one plugin receives (libcni buildOneConfig + injectRuntimeConfig). */
export function buildPluginConfig(
  list: CniConfList,
  plugin: CniPluginConf,
  prevResult: CniResult | undefined,
  rt: Pick<CniRuntimeConf, 'capabilityArgs'>,
): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  else delete conf.prevResult;
  const rc: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(plugin.capabilities ?? {})) {
    if (on && rt.capabilityArgs && cap in rt.capabilityArgs) rc[cap] = rt.capabilityArgs[cap];
  }
  if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  return conf;
}

/** CNI_ARGS value: IgnoreUnknown=1 first, then the given args. */
export function cniArgsString(args?: Record<string, string>): string {
  const parts = ['IgnoreUnknown=1'];
  for (const [k, v] of Object.entries(args ?? {})) {
    if (k === 'IgnoreUnknown') continue;
    parts.push(`${k}=${v}`);
  }
  return parts.join(';');
}

/** Runs one plugin once; returns its parsed stdout (undefined when empty). */
export async function invokePlugin(
  command: CniCommand,
  conf: Record<string, unknown>,
  rt: CniRuntimeConf,
): Promise<CniResult | undefined> {
  const type = String(conf.type);
  const exe = findPlugin(type, rt.binDirs);
  const cmd = rt.runInNetns ? ['nsenter', `--net=${rt.runInNetns}`, '--', exe] : [exe];
  const env: Record<string, string> = {
    ...(rt.env ?? {}),
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifName,
    CNI_ARGS: cniArgsString(rt.args),
    CNI_PATH: rt.binDirs.join(':'),
  };
  const res = await run(cmd, { input: JSON.stringify(conf), env, timeoutMs: rt.timeoutMs ?? 30000, allowFail: true });
  const out = res.stdout.trim();
  if (res.code !== 0) {
    let cniError: unknown;
    try {
      cniError = out ? JSON.parse(out) : undefined;
    } catch {
      cniError = undefined;
    }
    const errText = cniError !== undefined ? JSON.stringify(cniError) : out || '(no stdout)';
    throw new CniPluginError(
      `CNI plugin ${type} ${command} failed (exit ${res.code}, container ${rt.containerId}, ifName ${rt.ifName}): ` +
        `${errText}${res.stderr.trim() ? `\nstderr: ${res.stderr.trim()}` : ''}\ncommand: ${showCmd(cmd)}`,
      type,
      command,
      res.code,
      cniError,
      res.stdout,
      res.stderr,
    );
  }
  if (!out) return undefined;
  try {
    return JSON.parse(out) as CniResult;
  } catch (e) {
    throw new CniPluginError(
      `CNI plugin ${type} ${command} printed invalid JSON: ${(e as Error).message}: ${out.slice(0, 2000)}`,
      type,
      command,
      0,
      undefined,
      res.stdout,
      res.stderr,
    );
  }
}

/** ADD: runs the plugins in order, chaining prevResult; returns the last plugin's result. */
export async function cniAdd(conflist: object, rt: CniRuntimeConf): Promise<CniResult> {
  const list = validateList(conflist);
  let prev: CniResult | undefined;
  for (const plugin of list.plugins) {
    const conf = buildPluginConfig(list, plugin, prev, rt);
    const result = await invokePlugin('ADD', conf, rt);
    if (result === undefined) {
      throw new CniPluginError(`CNI plugin ${plugin.type} ADD printed no result`, plugin.type, 'ADD', 0, undefined, '', '');
    }
    prev = result;
  }
  return prev!;
}

/**
 * DEL: runs the plugins in reverse order, each with prevResult = the given
 * result (the cached final ADD result; omitted for cniVersion < 0.4.0 as libcni does).
 * The first failing plugin throws.
 */
export async function cniDel(conflist: object, rt: CniRuntimeConf, prevResult?: CniResult): Promise<void> {
  const list = validateList(conflist);
  const prev = versionAtLeast(list.cniVersion, '0.4.0') ? prevResult : undefined;
  for (const plugin of [...list.plugins].reverse()) {
    await invokePlugin('DEL', buildPluginConfig(list, plugin, prev, rt), rt);
  }
}

/** CHECK: runs the plugins in order, each with prevResult = the given result. Skipped when disableCheck. */
export async function cniCheck(conflist: object, rt: CniRuntimeConf, prevResult: CniResult): Promise<void> {
  const list = validateList(conflist);
  if (!versionAtLeast(list.cniVersion, '0.4.0')) throw new Error(`CNI CHECK needs cniVersion >= 0.4.0, not ${list.cniVersion}`);
  if (list.disableCheck) return;
  for (const plugin of list.plugins) {
    await invokePlugin('CHECK', buildPluginConfig(list, plugin, prevResult, rt), rt);
  }
}
