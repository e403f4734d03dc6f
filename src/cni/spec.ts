/* CNI spec facts the handler needs: versions, error codes, CNI_ARGS, raw JSON members. */

/** The versions sluice speaks; the plugin's list (cni/cni-spec.c) is checked against it by a test. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** The version answers are given in when the caller's is not known. */
export const NEWEST_VERSION = '1.1.0';

/** Error codes of the CNI spec (1.1, "Error codes"); >= 100 are this plugin's own. */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  limitedConnectivity: 51,
  /** CHECK: the agent holds no registration matching this attachment */
  notRegistered: 101,
  /** ADD: the pod asks for capture sluice will not set up as asked (an invalid or unsupported
   * annotation): permanent until the pod changes, as istio-cni fails such an ADD */
  podRefused: 102,
} as const;

/** The version as three numbers, for ordering. */
export function versionAtLeast(v: string, min: string): boolean {
  const a = v.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

/** Parses CNI_ARGS ("K=V;K=V"); later keys win, as in libcni. */
export function parseCniArgs(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const pair of text.split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/**
 * The exact text of a top-level member's value in a JSON object (already validated by JSON.parse),
 * so that prevResult can be passed on byte for byte, as the primary plugin wrote it. A key that
 * appears more than once gives its last value, the one JSON.parse (and Go) keeps.
 */
export function rawMember(json: string, key: string): string | undefined {
  let i = json.indexOf('{');
  if (i < 0) return undefined;
  i++;
  const skipWs = () => {
    while (i < json.length && ' \t\r\n'.includes(json[i])) i++;
  };
  const skipString = () => {
    i++; // opening quote
    while (i < json.length && json[i] !== '"') i += json[i] === '\\' ? 2 : 1;
    i++;
  };
  const skipValue = () => {
    skipWs();
    if (json[i] === '"') return skipString();
    if (json[i] === '{' || json[i] === '[') {
      let depth = 0;
      while (i < json.length) {
        const c = json[i];
        if (c === '"') {
          skipString();
          continue;
        }
        if (c === '{' || c === '[') depth++;
        if (c === '}' || c === ']') depth--;
        i++;
        if (depth === 0) return;
      }
      return;
    }
    while (i < json.length && !',}] \t\r\n'.includes(json[i])) i++;
  };
  let found: string | undefined;
  for (let guard = 0; guard < json.length; guard++) {
    skipWs();
    if (json[i] !== '"') return found;
    const keyStart = i;
    skipString();
    const name = JSON.parse(json.slice(keyStart, i));
    skipWs();
    i++; // colon
    skipWs();
    const valueStart = i;
    skipValue();
    if (name === key) found = json.slice(valueStart, i);
    skipWs();
    if (json[i] !== ',') return found;
    i++;
  }
  return found;
}
