/*
 * Which file of cni-conf-dir the container runtime loads, as a pure function of the directory's
 * listing and the files' contents.
 *
 * As the runtimes do it: libcni's ConfFiles lists the entries whose extension (Go's
 * filepath.Ext: from the last dot, so dot files count too) is .conf, .conflist or .json, except
 * directories; the names are sorted as Go sorts strings (bytewise); the first one is the default
 * network (containerd's go-cni loadFromConfDir, CRI-O's ocicni). A file that does not parse as a
 * config is skipped here, as CRI-O skips it; containerd instead refuses to load any config while
 * such a file sorts first, so for containerd the answer is the file it loads once the broken one
 * is fixed or gone. Either way sluice never chains into a file that cannot be loaded.
 */
import { compareFileNames, isConfigFileName, parseCniConfig, type CniConfig } from './conflist';

export interface ConfigDirEntry {
  name: string;
  /** The file's content; undefined when it is not a regular file (or vanished while listing). */
  text: string | undefined;
}

export interface SkippedConfig {
  name: string;
  reason: string;
  /** Not JSON at all (as opposed to JSON the runtime rejects). */
  notJson: boolean;
}

export type RuntimeChoice =
  | { found: true; name: string; config: CniConfig; skipped: SkippedConfig[] }
  | { found: false; skipped: SkippedConfig[] };

export interface RuntimeChoiceOptions {
  /**
   * The name a file sorts by when it is not its own. sluice's conversion of a single-plugin
   * `<stem>.conf` into `<stem>.conflist` sorts where the `.conf` was, so that converting never
   * changes which file comes first. Default: every file sorts by its name.
   */
  sortsAs?: ReadonlyMap<string, string>;
}

/** The config file names of a listing, in the order the runtime considers them. */
export function configFileNames(listing: readonly string[]): string[] {
  return listing.filter(isConfigFileName).sort(compareFileNames);
}

export function configTheRuntimeLoads(entries: readonly ConfigDirEntry[], opts: RuntimeChoiceOptions = {}): RuntimeChoice {
  const sortName = (name: string): string => opts.sortsAs?.get(name) ?? name;
  const candidates = entries
    .filter((e) => isConfigFileName(e.name) && e.text !== undefined)
    .sort((a, b) => compareFileNames(sortName(a.name), sortName(b.name)) || compareFileNames(a.name, b.name));
  const skipped: SkippedConfig[] = [];
  for (const entry of candidates) {
    const parsed = parseCniConfig(entry.name, entry.text as string);
    if (parsed.kind !== 'invalid') return { found: true, name: entry.name, config: parsed, skipped };
    skipped.push({ name: entry.name, reason: parsed.reason, notJson: parsed.notJson });
  }
  return { found: false, skipped };
}
