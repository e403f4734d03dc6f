/*
 * A ClusterSource feeds an ObjectStore with the cluster objects the agent
 * follows: a directory of manifests in standalone mode (dir-source.ts), the
 * API server in a cluster. The agent only programs the datapath once the
 * source reports an initial full sync, so a half-known cluster never
 * replaces a complete one.
 */
import type { ObjectStore } from './store';

export interface ClusterSource {
  /** Begins following; resolves after the initial full sync has been written to store. */
  start(store: ObjectStore): Promise<void>;
  /** Stops following (closing watchers and timers); objects already in the store are left there. */
  stop(): Promise<void>;
  /** True once the initial full sync has completed, until stop(). */
  readonly synced: boolean;
}
