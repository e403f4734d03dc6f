/* The one error class of map migration, with a kind callers match on (never the message). */

export type MigrationErrorKind =
  /** a pinned map's layout changed, no converter applies and its policy is to refuse */
  | 'unconvertible'
  /** the new map cannot hold the old map's entries (smaller max_entries) */
  | 'does-not-fit'
  /** two objects declare the same map differently */
  | 'objects-disagree'
  /** committing the new pins failed after the programs were swapped */
  | 'commit-failed'
  /** a pinned map's key or value size is not what this release's codec reads (opened without migrating) */
  | 'incompatible';

export class MapMigrationError extends Error {
  constructor(
    readonly kind: MigrationErrorKind,
    /** the map concerned */
    readonly map: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MapMigrationError';
  }
}
