/* The `.rodata` settings of an opened object, checked against the table of what it must declare
 * before any is set: a C global renamed or removed without its TypeScript side fails the load,
 * naming the object and the global, instead of being skipped (Cilium's applyConstants refuses a
 * constant the object lacks for the same reason); and a global the table does not name fails too,
 * since the programs would run with its compiled-in default.
 */
import type { BpfObject } from './object';

/** An object's .rodata and the table of its settings disagree. */
export class ObjectSettingsError extends Error {
  constructor(
    /** the object file */
    readonly object: string,
    /** settings the table declares that the object does not have */
    readonly missing: readonly string[],
    /** globals the object has that the table does not declare */
    readonly unknown: readonly string[],
  ) {
    const parts: string[] = [];
    if (missing.length)
      parts.push(
        `its .rodata has no ${missing.join(', ')}, which the agent must set (renamed or removed in bpf/ without the table in src/datapath.ts?)`,
      );
    if (unknown.length)
      parts.push(
        `it declares ${unknown.join(', ')}, which the agent does not set (the programs would run with the compiled-in default)`,
      );
    super(`Cannot configure ${object}: ${parts.join('; and ')}`);
    this.name = 'ObjectSettingsError';
  }
}

export interface ApplySettingsOptions {
  /**
   * The object comes from another release (`bpf migrate --object-dir`, a downgrade): declared
   * settings it lacks are skipped and returned, since that release did not have them. Globals it
   * declares that this agent does not know still fail. Default false: this release's objects.
   */
  otherRelease?: boolean;
}

/**
 * Sets every setting `declared` names, with its value from `values`, on the opened object, after
 * checking the object's .rodata against `declared` both ways. Returns the declared settings that
 * were skipped (only with otherRelease).
 */
export function applySettings(
  obj: BpfObject,
  declared: readonly string[],
  values: ReadonlyMap<string, Buffer>,
  opts: ApplySettingsOptions = {},
): string[] {
  for (const name of declared) {
    if (!values.has(name)) throw new TypeError(`Cannot configure ${obj.path}: the setting ${name} it must declare has no value`);
  }
  const present = new Set(obj.rodataVars().map((v) => v.name));
  const missing = declared.filter((n) => !present.has(n));
  const known = opts.otherRelease ? new Set(values.keys()) : new Set(declared);
  const unknown = [...present].filter((n) => !known.has(n));
  if (unknown.length || (missing.length && !opts.otherRelease))
    throw new ObjectSettingsError(obj.path, opts.otherRelease ? [] : missing, unknown);
  for (const name of present) obj.setRodata(name, values.get(name)!);
  return missing;
}
