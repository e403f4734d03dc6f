/* Handing ambient pods to ztunnel over ZDS, after their capture is in the kernel (istio-cni's
 * order: in-pod redirection first, then ztunnel's ack, then the "enabled" status on the Pod).
 * Per pod: pending (not yet acked: no ztunnel connected, or waiting), acked, or nack (ztunnel
 * refused or did not answer: retried with capped exponential backoff). While a pod is not
 * acked its capture fails closed: nothing reaches the network or the app around the proxy.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { log } from '../log';
import { NoZtunnelError, ZdsServer, type AddResult, type Listen, type ZdsWorkload } from './zds/server';

export type ZdsState = 'pending' | 'acked' | 'nack';

export interface ZdsPodStatus {
  state: ZdsState;
  /** ztunnel's error text (nack) or why the hand-off failed */
  error?: string;
  /** hand-off attempts so far */
  attempts: number;
  since: string;
}

interface Tracked {
  w: ZdsWorkload;
  st: ZdsPodStatus;
  retry?: NodeJS.Timeout;
  /** callers waiting for the pod's first answer (a CNI ADD) */
  waiters: Array<() => void>;
}

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30000;

export interface AmbientZdsOptions {
  path: string;
  listen: Listen;
  deadlineMs?: number;
  /** a pod's state changed (write-back, metrics) */
  onState?(w: ZdsWorkload, st: ZdsPodStatus): void;
  /** where the last known state of every pod is kept for `sluice endpoint list` */
  stateFile?: string;
}

/** The last known ZDS state of each ambient pod, by uid (what `endpoint list` shows); undefined
 * when the agent never served ZDS. */
export function readZdsStates(stateFile: string): Record<string, ZdsPodStatus> | undefined {
  try {
    return JSON.parse(fs.readFileSync(stateFile, 'utf8')) as Record<string, ZdsPodStatus>;
  } catch {
    return undefined;
  }
}

export class AmbientZds {
  private readonly pods = new Map<string, Tracked>();
  readonly server: ZdsServer;

  constructor(private readonly opts: AmbientZdsOptions) {
    this.server = new ZdsServer({
      path: opts.path,
      listen: opts.listen,
      deadlineMs: opts.deadlineMs,
      snapshot: () => [...this.pods.values()].map((t) => t.w),
      onSnapshotResult: (uid, r) => this.answered(uid, r),
    });
  }

  start(): void {
    this.scheduleSave(); // the state file says ZDS is served, also before any pod
    this.server.listen();
  }

  status(uid: string): ZdsPodStatus | undefined {
    return this.pods.get(uid)?.st;
  }

  /** Ambient pods ztunnel has not acked yet (pending or nacked): their capture fails closed. */
  get unacked(): number {
    let n = 0;
    for (const t of this.pods.values()) if (t.st.state !== 'acked') n++;
    return n;
  }

  /**
   * The pod is captured in ambient mode: hand it to the newest ztunnel (again, when its netns
   * changed). Without a ztunnel the pod waits, pending, for the next snapshot.
   */
  enrolled(w: ZdsWorkload): void {
    const t = this.pods.get(w.uid);
    if (t && t.w.netnsPath === w.netnsPath && t.w.name === w.name && t.w.serviceAccount === w.serviceAccount) return;
    if (t) clearTimeout(t.retry);
    this.pods.set(w.uid, {
      w,
      st: { state: 'pending', attempts: 0, since: new Date().toISOString() },
      waiters: t?.waiters ?? [],
    });
    this.emit(w.uid);
    this.send(w.uid);
  }

  /** Resolves once the pod was answered (acked or nacked) or after `boundMs`, whichever first. */
  async waitForAnswer(uid: string, boundMs: number): Promise<ZdsPodStatus | undefined> {
    const t = this.pods.get(uid);
    if (t?.st.state !== 'pending' || this.server.connected === 0) return t?.st;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, boundMs);
      t.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.pods.get(uid)?.st;
  }

  /** The pod left ambient mode or was deleted: every ztunnel drops it. */
  async released(uid: string): Promise<void> {
    const t = this.pods.get(uid);
    if (!t) return;
    clearTimeout(t.retry);
    this.pods.delete(uid);
    for (const w of t.waiters.splice(0)) w();
    this.scheduleSave();
    await this.server.del(uid);
  }

  private send(uid: string): void {
    const t = this.pods.get(uid);
    if (!t) return;
    t.st.attempts++;
    this.server.add(t.w).then(
      (r) => this.answered(uid, r),
      (e: Error) => {
        if (e instanceof NoZtunnelError) {
          log.info('no ztunnel connected; the pod waits for the next snapshot', { uid, pod: `${t.w.namespace}/${t.w.name}` });
          if (t.st.state !== 'pending') {
            t.st = { state: 'pending', attempts: t.st.attempts, since: new Date().toISOString() };
            this.emit(uid);
          }
          return; // the next snapshot carries it
        }
        this.answered(uid, { ok: false, error: e.message });
      },
    );
  }

  private answered(uid: string, r: AddResult): void {
    const t = this.pods.get(uid);
    if (!t) return;
    clearTimeout(t.retry);
    t.retry = undefined;
    const pod = `${t.w.namespace}/${t.w.name}`;
    if (r.ok) {
      t.st = { state: 'acked', attempts: t.st.attempts, since: new Date().toISOString() };
      log.info('ztunnel acked the pod', { uid, pod });
    } else {
      t.st = { state: 'nack', error: r.error, attempts: t.st.attempts, since: new Date().toISOString() };
      const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.min(t.st.attempts - 1, 10));
      log.warn('ztunnel did not take the pod; retrying', { uid, pod, error: r.error, attempts: t.st.attempts, retryInMs: delay });
      t.retry = setTimeout(() => this.send(uid), delay);
    }
    for (const w of t.waiters.splice(0)) w();
    this.emit(uid);
  }

  private emit(uid: string): void {
    const t = this.pods.get(uid);
    if (t) this.opts.onState?.(t.w, t.st);
    this.scheduleSave();
  }

  private saveQueued = false;

  /** Coalesced: a burst of answers (a snapshot) is one write. */
  private scheduleSave(): void {
    const file = this.opts.stateFile;
    if (!file || this.saveQueued) return;
    this.saveQueued = true;
    setImmediate(() => {
      this.saveQueued = false;
      const out = Object.fromEntries([...this.pods].map(([uid, t]) => [uid, t.st]));
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
      try {
        fs.mkdirSync(path.dirname(file), { recursive: true });
        fs.writeFileSync(tmp, JSON.stringify(out) + '\n');
        fs.renameSync(tmp, file);
      } catch (e) {
        log.warn('cannot save ZDS states', { file, err: (e as Error).message });
      }
    });
  }

  close(): void {
    for (const t of this.pods.values()) clearTimeout(t.retry);
    this.server.close();
  }
}
