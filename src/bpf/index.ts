/* The loader's public surface. */
export { BpfError, errnoText, packageRoot, type InpodCfg } from './shim';
export { BpfMap, openPinnedSet, type Codec, type MapInfo } from './map';
export {
  attachNetns, BpfObject, inpodRouting, kernelHasKfunc, updateLinkProgram, cgroupId, netnsCookieOf, netnsCookieSelf, pinnedLinkInfo, SocketIterator,
  type AttachResult,
} from './object';
export { possibleCpus } from './cpus';
