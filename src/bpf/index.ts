/* The loader's public surface. */
export { BpfError, errnoText, packageRoot } from './shim';
export { BpfMap, openPinnedSet, type Codec, type MapInfo } from './map';
export { attachNetns, BpfObject, updateLinkProgram, cgroupId, netnsCookieOf, netnsCookieSelf, pinnedLinkInfo, type AttachResult } from './object';
export { possibleCpus } from './cpus';
export { loadWithMigration, type MapMigration, type MapPolicy, type MigrationRegistry, type RegisteredConverter } from './migrate';
export { MapMigrationError, type MigrationErrorKind } from './migration-error';
export { LinkTransaction } from './link-transaction';
export { layoutId, pinnedMapSpec, type MapSpec } from './map-spec';
export { socketFdsUnder } from './socket-owners';
