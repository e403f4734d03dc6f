/* The CNI commands, handled in the agent: the C plugin (cni/dispatch.c) forwards its
 * environment and stdin here and prints what this returns. One call dispatches on CNI_COMMAND,
 * with env and stdin passed in, so every behaviour is testable without a process.
 *
 * The plugin answers VERSION and the errors that retrying cannot fix itself, before it forwards
 * anything; this handler checks them again for any other caller, in the same words. Every CNI
 * error the agent sends, here or elsewhere (src/agent/cni-requests.ts), is formatted by cniError.
 */
import type { PodRegistration, PodRegistry } from '../agent/pod-registry';
import { CniCode, NEWEST_VERSION, parseCniArgs, rawMember, SUPPORTED_VERSIONS, versionAtLeast } from './spec';

export interface CniRequest {
  command: string;
  env: Record<string, string | undefined>;
  stdin: string;
  /** computed by the plugin inside CNI_NETNS */
  netnsCookie?: string;
  netnsError?: string;
}

export interface CniReply {
  /** the plugin's exit code */
  code: number;
  /** the exact bytes the plugin prints */
  stdout: string;
}

export interface CniDeps {
  registry: PodRegistry;
  /** ready for pods: when not, ADD answers "try again later" (11) and STATUS "not available" (50) */
  readiness(): { ready: boolean; reason: string };
  /** hooks for the datapath (capture); a throw fails the command with code 11, a
   * PodRefusedError with code 102 (permanent: the pod's annotations must change) */
  onAdd?(reg: PodRegistration): void;
  onDel?(reg: PodRegistration): void;
  now?(): Date;
}

/** Thrown by onAdd when the pod must not start as it is (an invalid capture annotation). */
export class PodRefusedError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'PodRefusedError';
  }
}

class CniFailure extends Error {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = '',
  ) {
    super(msg);
  }
}

interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  prevResult?: { ips?: Array<{ address?: string }> };
  [k: string]: unknown;
}

function parseConf(stdin: string): NetConf {
  let conf: unknown;
  try {
    conf = JSON.parse(stdin);
  } catch (e) {
    throw new CniFailure(CniCode.decodeFailure, 'cannot decode network configuration', (e as Error).message);
  }
  if (typeof conf !== 'object' || conf === null || Array.isArray(conf)) {
    throw new CniFailure(CniCode.decodeFailure, 'cannot decode network configuration', 'expected a JSON object');
  }
  const c = conf as Record<string, unknown>;
  if (typeof c.cniVersion !== 'string' || c.cniVersion === '') {
    throw new CniFailure(CniCode.invalidConfig, 'invalid network configuration', 'cniVersion is required');
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(c.cniVersion)) {
    throw new CniFailure(
      CniCode.incompatibleVersion,
      'incompatible CNI versions',
      `config is "${c.cniVersion}", plugin supports ${JSON.stringify(SUPPORTED_VERSIONS)}`,
    );
  }
  for (const k of ['name', 'type'] as const) {
    if (typeof c[k] !== 'string' || c[k] === '')
      throw new CniFailure(CniCode.invalidConfig, 'invalid network configuration', `${k} is required`);
  }
  // null is an absent prevResult, as in Go (libcni, the plugin): encoding/json sets a map to nil
  if (c.prevResult === null) delete c.prevResult;
  if (c.prevResult !== undefined && (typeof c.prevResult !== 'object' || Array.isArray(c.prevResult))) {
    throw new CniFailure(CniCode.invalidConfig, 'invalid network configuration', 'prevResult must be an object');
  }
  return c as NetConf;
}

function requireEnv(env: CniRequest['env'], names: string[]): void {
  for (const n of names) {
    if (!env[n]) throw new CniFailure(CniCode.invalidEnv, `required environment variable ${n} is missing`);
  }
}

/** The IPs a prevResult assigns (ips[].address without the prefix length). */
function resultIps(prev: NetConf['prevResult']): string[] {
  const out: string[] = [];
  for (const ip of prev?.ips ?? []) {
    if (typeof ip?.address === 'string') out.push(ip.address.split('/')[0]);
  }
  return out;
}

/**
 * A CNI error reply (exit 1, the error object on stdout), answered in the caller's cniVersion:
 * the one in its configuration (stdin), else the newest supported.
 */
export function cniError(stdin: string, code: number, msg: string, details?: string): CniReply {
  const e: Record<string, unknown> = { cniVersion: requestedVersion(stdin), code, msg };
  if (details) e.details = details;
  return { code: 1, stdout: JSON.stringify(e) + '\n' };
}

/** Dispatches one CNI command. Never throws: failures become CNI error JSON. */
export function handleCni(req: CniRequest, deps: CniDeps): CniReply {
  // Answered by the plugin alone (cni/dispatch.c), never forwarded: one answer, in one place.
  if (req.command === 'VERSION')
    return cniError(req.stdin, CniCode.invalidEnv, 'VERSION is answered by the sluice-cni plugin, not by the agent');
  try {
    const conf = parseConf(req.stdin);
    switch (req.command) {
      case 'ADD':
        return add(req, conf, deps);
      case 'DEL':
        return del(req, deps);
      case 'CHECK':
        return check(req, conf, deps);
      case 'STATUS':
        return status(conf, deps);
      case 'GC':
        return gc(conf, deps);
      default:
        throw new CniFailure(CniCode.invalidEnv, `unknown CNI_COMMAND "${req.command}"`);
    }
  } catch (e) {
    const f = e instanceof CniFailure ? e : new CniFailure(CniCode.tryAgainLater, 'sluice agent failed', (e as Error).message);
    return cniError(req.stdin, f.code, f.message, f.details);
  }
}

/** The cniVersion of the request when it has one, else the newest. */
function requestedVersion(stdin: string): string {
  try {
    const v = JSON.parse(stdin)?.cniVersion;
    if (typeof v === 'string' && v) return v;
  } catch {
    /* undecodable: answered in the newest version */
  }
  return NEWEST_VERSION;
}

function add(req: CniRequest, conf: NetConf, deps: CniDeps): CniReply {
  requireEnv(req.env, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']);
  // Chained plugins pass the previous result on; run alone, there is nothing to pass.
  const prevRaw = rawMember(req.stdin, 'prevResult');
  if (conf.prevResult === undefined || prevRaw === undefined) {
    throw new CniFailure(
      CniCode.invalidConfig,
      'sluice-cni must be chained after the primary plugin',
      'no prevResult in the configuration',
    );
  }
  if (!req.netnsCookie) {
    throw new CniFailure(CniCode.invalidEnv, `CNI_NETNS ${req.env.CNI_NETNS} is not usable`, req.netnsError ?? 'no cookie');
  }
  const ready = deps.readiness();
  if (!ready.ready) throw new CniFailure(CniCode.tryAgainLater, 'sluice agent is not ready; try again later', ready.reason);
  const args = parseCniArgs(req.env.CNI_ARGS);
  const reg: PodRegistration = {
    containerId: req.env.CNI_CONTAINERID!,
    ifName: req.env.CNI_IFNAME!,
    namespace: args.K8S_POD_NAMESPACE ?? '',
    name: args.K8S_POD_NAME ?? '',
    uid: args.K8S_POD_UID ?? '',
    ips: resultIps(conf.prevResult),
    netnsCookie: req.netnsCookie,
    netnsPath: req.env.CNI_NETNS!,
    network: conf.name,
    createdAt: (deps.now?.() ?? new Date()).toISOString(),
  };
  deps.registry.put(reg);
  try {
    deps.onAdd?.(reg);
  } catch (e) {
    deps.registry.remove(reg.containerId, reg.ifName);
    if (e instanceof PodRefusedError) throw new CniFailure(CniCode.podRefused, `sluice refuses the pod: ${e.message}`);
    throw new CniFailure(CniCode.tryAgainLater, 'sluice could not program the pod; try again later', (e as Error).message);
  }
  return { code: 0, stdout: prevRaw + '\n' };
}

/** DEL is idempotent: an unknown attachment or a vanished namespace is success. */
function del(req: CniRequest, deps: CniDeps): CniReply {
  requireEnv(req.env, ['CNI_CONTAINERID', 'CNI_IFNAME']);
  const reg = deps.registry.remove(req.env.CNI_CONTAINERID!, req.env.CNI_IFNAME!);
  if (reg) deps.onDel?.(reg);
  return { code: 0, stdout: '' };
}

function check(req: CniRequest, conf: NetConf, deps: CniDeps): CniReply {
  if (!versionAtLeast(conf.cniVersion, '0.4.0')) {
    throw new CniFailure(CniCode.incompatibleVersion, 'CHECK needs cniVersion 0.4.0 or later', `config is "${conf.cniVersion}"`);
  }
  requireEnv(req.env, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']);
  if (conf.prevResult === undefined)
    throw new CniFailure(CniCode.invalidConfig, 'sluice-cni must be chained after the primary plugin', 'no prevResult');
  const reg = deps.registry.get(req.env.CNI_CONTAINERID!, req.env.CNI_IFNAME!);
  if (!reg)
    throw new CniFailure(
      CniCode.notRegistered,
      'sluice has no registration for this container',
      `${req.env.CNI_CONTAINERID} ${req.env.CNI_IFNAME}`,
    );
  if (reg.netnsCookie !== req.netnsCookie) {
    throw new CniFailure(
      CniCode.notRegistered,
      'sluice registered this container in another network namespace',
      `registered cookie ${reg.netnsCookie}, CNI_NETNS has ${req.netnsCookie ?? req.netnsError}`,
    );
  }
  const ips = resultIps(conf.prevResult).sort().join(',');
  if (ips !== [...reg.ips].sort().join(',')) {
    throw new CniFailure(
      CniCode.notRegistered,
      'sluice registered other IPs for this container',
      `registered ${reg.ips.join(',')}, prevResult has ${ips}`,
    );
  }
  return { code: 0, stdout: '' };
}

function status(conf: NetConf, deps: CniDeps): CniReply {
  if (!versionAtLeast(conf.cniVersion, '1.1.0')) {
    throw new CniFailure(CniCode.incompatibleVersion, 'STATUS needs cniVersion 1.1.0', `config is "${conf.cniVersion}"`);
  }
  const r = deps.readiness();
  if (!r.ready) throw new CniFailure(CniCode.notAvailable, 'sluice agent is not ready', r.reason);
  return { code: 0, stdout: '' };
}

/** GC (1.1): forget registrations of attachments the runtime no longer knows. */
function gc(conf: NetConf, deps: CniDeps): CniReply {
  if (!versionAtLeast(conf.cniVersion, '1.1.0')) {
    throw new CniFailure(CniCode.incompatibleVersion, 'GC needs cniVersion 1.1.0', `config is "${conf.cniVersion}"`);
  }
  const valid = conf['cni.dev/valid-attachments'];
  if (valid !== undefined && !Array.isArray(valid)) {
    throw new CniFailure(CniCode.invalidConfig, 'invalid network configuration', 'cni.dev/valid-attachments must be a list');
  }
  const keep = new Set((valid ?? []).map((a: { containerID?: string; ifname?: string }) => `${a?.containerID}\n${a?.ifname}`));
  for (const reg of deps.registry.list()) {
    if (reg.network !== conf.name) continue; // another network's attachments are not ours to judge
    if (keep.has(`${reg.containerId}\n${reg.ifName}`)) continue;
    deps.registry.remove(reg.containerId, reg.ifName);
    deps.onDel?.(reg);
  }
  return { code: 0, stdout: '' };
}
