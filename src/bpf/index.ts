/* The loader's public surface. */
export { BpfError, errnoText, packageRoot, type InpodCfg } from './shim';
export { BpfMap, openPinnedSet, readMapInfo, type Codec, type MapInfo } from './map';
export {
  attachNetns,
  BpfObject,
  inpodRouting,
  updateLinkProgram,
  cgroupId,
  netnsCookieOf,
  netnsCookieSelf,
  pinnedLinkInfo,
  SocketIterator,
  type AttachResult,
} from './object';
export { possibleCpus } from './cpus';
export { censusPinnedMap, FILLING_MAP_TYPES, type KeyVisitor, type MapCensus } from './map-census';
export {
  loadWithMigration,
  type MapMigration,
  type MapPolicy,
  type MigrationRegistry,
  type RegisteredConverter,
} from './migrate';
export { MapMigrationError, type MigrationErrorKind } from './migration-error';
export { LinkTransaction } from './link-transaction';
export { layoutId, pinnedMapSpec, type MapSpec } from './map-spec';
export { socketFdsUnder } from './socket-owners';
export { runProgram, type RunInput } from './prog-run';
export { applySettings, ObjectSettingsError, type ApplySettingsOptions } from './settings';
