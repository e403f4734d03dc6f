/* Booleans as Istio reads its annotations and proxy env: Go's strconv.ParseBool. */

/**
 * true for 1, t, T, TRUE, true, True; false for 0, f, F, FALSE, false, False; undefined for
 * anything else (and for an absent value), which Istio logs and treats as not set.
 */
export function parseGoBool(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  return undefined;
}
