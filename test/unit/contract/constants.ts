/* The constants contract: what the C headers define (as build/test/contract-constants prints it)
 * against the TypeScript values that mirror each, by C name. Pure functions over the two sides, so
 * that test/unit/contract-constants.test.ts can also feed them a mutated side and see them fail.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  CAPTURE_OUTCOME,
  DEFAULT_PROXY_MARK,
  DNS_PORT,
  EP_STATS,
  EVENT_REASONS,
  EVENT_TYPES,
  INBOUND_DECISION,
  INBOUND_MARK,
  LISTENER_SLOTS,
  MAX_DNS_SERVERS,
  PROXY_PORT,
  SOCK_REV_SLOTS,
  TPROXY_MARK,
  VERDICT,
} from '../../../src/bpf/constants';
import {
  COUNTERS,
  IPPROTO_TCP,
  IPPROTO_UDP,
  MAX_CIDRS,
  MAX_POD_IPS,
  MAX_PORTS,
  MODE,
  POL_DNS,
  POL_IN_ALL,
  POL_LOOPBACK_RANGE,
  POL_NO_INBOUND,
  POL_OUT_ALL,
  POL_TPROXY,
  SVC_F_AFFINITY,
  SVC_F_EXTERNAL,
  SVC_F_NO_LOCAL,
  SVC_F_NODEPORT,
} from '../../../src/bpf/layout';
import { CniCode, NEWEST_VERSION, SUPPORTED_VERSIONS } from '../../../src/cni/spec';

export const ROOT = path.resolve(__dirname, '../../..');

/** What build/test/contract-constants prints. */
export interface CConstants {
  numbers: Record<string, number>;
  /** the versions cni_version_supported accepts */
  cniAccepted: string[];
  /** the supportedVersions list of the plugin's VERSION answer */
  cniVersionAnswer: string[];
  cniNewest: string;
}

/** The headers whose every #define and enum member is mirrored, and the names in them that are not constants to mirror. */
export const MIRRORED_HEADERS = ['bpf/lib/shared.h', 'bpf/lib/verdicts.h', 'bpf/lib/mesh_consts.h'];
const NOT_CONSTANTS = new Set(['SLUICE_SHARED_H', 'SLUICE_VERDICTS_H', 'SLUICE_MESH_CONSTS_H']);

/** Runs the constants printer (built by make all, or another build of it). */
export function readCConstants(binary = path.join(ROOT, 'build/test/contract-constants')): CConstants {
  return JSON.parse(execFileSync(binary, { encoding: 'utf8', timeout: 10_000 })) as CConstants;
}

/** Every constant a header defines: the names of its object-like #defines and of its enum members. */
export function constantsDefinedIn(header: string): string[] {
  const text = header.replace(/\/\*[\s\S]*?\*\//g, '');
  const names = [...text.matchAll(/^#define\s+([A-Z_][A-Z0-9_]*)(?:\s|$)/gm)].map((m) => m[1]);
  for (const body of text.matchAll(/\benum\s+\w*\s*\{([^}]*)\}/g)) {
    for (const item of body[1].split(',')) {
      const name = /^\s*([A-Za-z_]\w*)/.exec(item)?.[1];
      if (name) names.push(name);
    }
  }
  return names.filter((n) => !NOT_CONSTANTS.has(n));
}

/** The CNI error codes cni-spec.h defines (its other names are the plugin's own). */
export function cniErrorsDefinedIn(header: string): string[] {
  return [...header.matchAll(/^#define\s+(CNI_ERR_[A-Z0-9_]+)\s/gm)].map((m) => m[1]);
}

export function readHeader(file: string, root = ROOT): string {
  return fs.readFileSync(path.join(root, file), 'utf8');
}

/** The TypeScript value of each C constant, by its C name. */
export function typeScriptMirror(): Record<string, number> {
  const out: Record<string, number> = {
    SL_SVC_F_AFFINITY: SVC_F_AFFINITY,
    SL_SVC_F_EXTERNAL: SVC_F_EXTERNAL,
    SL_SVC_F_NO_LOCAL: SVC_F_NO_LOCAL,
    SL_SVC_F_NODEPORT: SVC_F_NODEPORT,
    SL_SOCK_REV_SLOTS: SOCK_REV_SLOTS,
    SL_MODE_NONE: MODE.none,
    SL_MODE_SIDECAR: MODE.sidecar,
    SL_MODE_AMBIENT: MODE.ambient,
    SL_POL_OUT_ALL: POL_OUT_ALL,
    SL_POL_IN_ALL: POL_IN_ALL,
    SL_POL_DNS: POL_DNS,
    SL_POL_LOOPBACK_RANGE: POL_LOOPBACK_RANGE,
    SL_POL_NO_INBOUND: POL_NO_INBOUND,
    SL_POL_TPROXY: POL_TPROXY,
    SL_MAX_CIDRS: MAX_CIDRS,
    SL_MAX_PORTS: MAX_PORTS,
    SL_MAX_POD_IPS: MAX_POD_IPS,
    SL_LISTENER_SLOTS: LISTENER_SLOTS,
    SL_REJECT: VERDICT.reject,
    SL_ALLOW: VERDICT.allow,
    CAP_NONE: CAPTURE_OUTCOME.none,
    CAP_PROXY: CAPTURE_OUTCOME.proxy,
    CAP_REDIRECTED: CAPTURE_OUTCOME.redirected,
    CAP_REFUSED: CAPTURE_OUTCOME.refused,
    CAP_IN_PASS: INBOUND_DECISION.pass,
    CAP_IN_STEER: INBOUND_DECISION.steer,
    SL_CNT_MAX: COUNTERS.length,
    SL_PORT_OUTBOUND: PROXY_PORT.outbound,
    SL_PORT_INBOUND: PROXY_PORT.inbound,
    SL_PORT_HBONE: PROXY_PORT.hbone,
    SL_PORT_DNS: DNS_PORT,
    SL_MAX_DNS_SERVERS: MAX_DNS_SERVERS,
    SL_TPROXY_MARK: TPROXY_MARK,
    SL_PROXY_MARK: DEFAULT_PROXY_MARK.mark,
    SL_PROXY_MARK_MASK: DEFAULT_PROXY_MARK.mask,
    SL_INBOUND_MARK: INBOUND_MARK.mark,
    SL_INBOUND_MARK_MASK: INBOUND_MARK.mask,
    IPPROTO_TCP,
    IPPROTO_UDP,
    CNI_ERR_INCOMPATIBLE_VERSION: CniCode.incompatibleVersion,
    CNI_ERR_INVALID_ENV: CniCode.invalidEnv,
    CNI_ERR_IO: CniCode.ioFailure,
    CNI_ERR_DECODE: CniCode.decodeFailure,
    CNI_ERR_INVALID_CONFIG: CniCode.invalidConfig,
    CNI_ERR_TRY_LATER: CniCode.tryAgainLater,
    CNI_ERR_NOT_AVAILABLE: CniCode.notAvailable,
  };
  // numbered lists mirrored as arrays: the index is the number
  COUNTERS.forEach((name, i) => (out[`SL_CNT_${name.toUpperCase()}`] = i));
  const statName = (field: string) =>
    field === 'proxyBypass' ? 'BYPASS' : field.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
  EP_STATS.forEach((field, i) => (out[`CAP_STAT_${statName(field)}`] = i));
  // datapath events: tables by number, the C name the kebab-case name in upper snake case
  const cName = (kebab: string) => kebab.replace(/-/g, '_').toUpperCase();
  for (const [n, name] of Object.entries(EVENT_TYPES)) out[`SL_EV_${cName(name)}`] = Number(n);
  out.SL_REASON_NONE = 0;
  for (const [n, name] of Object.entries(EVENT_REASONS)) out[`SL_REASON_${cName(name)}`] = Number(n);
  return out;
}

/**
 * Where the two sides disagree, one line each: a value that differs, a C constant without a
 * TypeScript mirror, a mirror of a constant C does not have, a constant a header defines that the
 * printer does not print, and CNI version lists that differ.
 */
export function constantsMismatches(c: CConstants, ts: Record<string, number>, definedInHeaders: string[]): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(c.numbers)) {
    if (!(name in ts)) out.push(`${name} = ${value} in C has no TypeScript mirror`);
    else if (ts[name] !== value) out.push(`${name} is ${value} in C, ${ts[name]} in TypeScript`);
  }
  for (const name of Object.keys(ts))
    if (!(name in c.numbers)) out.push(`${name} is mirrored in TypeScript (${ts[name]}) but C does not print it`);
  for (const name of definedInHeaders)
    if (!(name in c.numbers)) out.push(`${name} is defined in the C headers but test/c/contract-constants.c does not print it`);
  const versions = JSON.stringify(SUPPORTED_VERSIONS);
  if (JSON.stringify(c.cniAccepted) !== versions)
    out.push(`the plugin accepts CNI versions ${JSON.stringify(c.cniAccepted)}, src/cni/spec.ts ${versions}`);
  if (JSON.stringify(c.cniVersionAnswer) !== versions)
    out.push(`the plugin's VERSION answer lists ${JSON.stringify(c.cniVersionAnswer)}, src/cni/spec.ts ${versions}`);
  if (c.cniNewest !== NEWEST_VERSION)
    out.push(`the plugin's newest CNI version is ${c.cniNewest}, src/cni/spec.ts ${NEWEST_VERSION}`);
  return out;
}
