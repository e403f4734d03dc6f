/* Where the agent gets its datapath event feed. The feed (src/bpf/event-feed.ts: the sl_events
 * ring behind the sl_monitor gate) is built on another branch; until it is merged here, attaching a
 * monitor answers that this build has none.
 */
import type { EventFeed } from './types';

/** The feed over the pins of `pinDir`; called when the first monitor attaches. */
export function createEventFeed(pinDir: string): EventFeed {
  throw new Error(`datapath events not built into this sluice (no event feed for ${pinDir})`);
}
