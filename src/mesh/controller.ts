/* The mesh controller: decides each registered pod's capture mode from its Pod and Namespace
 * (Istio's rules, ./mode.ts), brings the kernel in line (./enroller.ts), hands ambient pods to
 * ztunnel over ZDS (./ambient-zds.ts) and tells the cluster (k8s/write-back.ts). socket-LB's
 * per-pod opt-out (src/lb/pod-opt-out.ts) is decided with each pod, at the same moments.
 *
 * Driven by CNI ADD and DEL, by repair, and by changes of Pods and Namespaces only: a change of a
 * Service or an EndpointSlice never re-decides a pod, and a changed Pod re-decides only its own
 * registrations, a changed Namespace only the registrations in it.
 *
 * Decisions (mode and the rule behind it) are kept apart from the registrations, in
 * <state-dir>/decisions.json, so that `sluice endpoint list` can show them while the agent is down.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { podLabel, type PodRegistration, type PodRegistry } from '../agent/pod-registry';
import type { ObjectStore, ChangeEvent } from '../k8s/store';
import type { Namespace, Pod } from '../k8s/types';
import type { WriteBack } from '../k8s/write-back';
import type { PodLbOptOut } from '../lb/pod-opt-out';
import { log } from '../log';
import type { AmbientZds } from './ambient-zds';
import type { Enroller } from './enroller';
import { decideMode, type ModeDecision, type ModeOptions } from './mode';

/** What is recorded of a decision: the mode, the rule behind it, a sidecar's proxy ids and DNS. */
export type Decision = Pick<ModeDecision, 'mode' | 'rule' | 'proxy' | 'dns'>;

function recorded(d: ModeDecision): Decision {
  return { mode: d.mode, rule: d.rule, ...(d.proxy ? { proxy: d.proxy } : {}), ...(d.dns ? { dns: d.dns } : {}) };
}

export interface MeshControllerOptions {
  store: ObjectStore;
  registry: PodRegistry;
  enroller: Enroller;
  mode: ModeOptions;
  /** where decisions are kept for `endpoint list` */
  decisionsFile: string;
  writeBack?: WriteBack;
  zds?: AmbientZds;
  /**
   * socket-LB's own per-pod decision (socket-lb.sluice.io/disabled): not capture, but made
   * whenever the pod is (ADD, repair, a change of its Pod), so that it follows the annotation live
   */
  lbOptOut?: Pick<PodLbOptOut, 'apply' | 'forget'>;
}

/** The registry's key of an attachment (a pod may have several: one per interface). */
function regKey(reg: Pick<PodRegistration, 'containerId' | 'ifName'>): string {
  return `${reg.containerId}/${reg.ifName}`;
}

/** Reads the decisions the agent last made, by registration (containerId/ifName). */
export function readDecisions(file: string): Record<string, Decision> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Decision>;
  } catch {
    return {};
  }
}

export function decisionOf(
  decisions: Record<string, Decision>,
  reg: Pick<PodRegistration, 'containerId' | 'ifName'>,
): Decision | undefined {
  return decisions[regKey(reg)];
}

export class MeshController {
  private readonly decisions: Map<string, Decision>;
  /** registrations to re-decide at the next flush() */
  private readonly dirty = new Set<string>();

  constructor(private readonly o: MeshControllerOptions) {
    this.decisions = new Map(Object.entries(readDecisions(o.decisionsFile)));
    if (!fs.existsSync(o.decisionsFile)) {
      // up to v0.1.0 each registration carried its decision: keep them, so an upgrade
      // re-announces nothing (no Events, no write-back) for pods whose mode did not change
      for (const reg of o.registry.list() as Array<PodRegistration & { decision?: Decision }>) {
        if (reg.decision) this.decisions.set(regKey(reg), reg.decision);
      }
    }
  }

  decision(reg: Pick<PodRegistration, 'containerId' | 'ifName'>): Decision | undefined {
    return this.decisions.get(regKey(reg));
  }

  /**
   * Decides and applies one registration now (CNI ADD, repair): capture is in place when this
   * returns. Throws when the kernel refuses.
   */
  apply(reg: PodRegistration): ModeDecision {
    this.o.lbOptOut?.apply(reg, this.pod(reg));
    const d = decideMode(
      this.pod(reg),
      this.o.store.get(`Namespace/${reg.namespace}`) as Namespace | undefined,
      reg.ips,
      this.o.mode,
    );
    const previous = this.decision(reg);
    const current = this.o.enroller.programmed(reg.netnsCookie);
    const pod = podLabel(reg);
    // the decision is recorded before the kernel changes, so that whoever sees the new mode in
    // the maps (`endpoint list`) also sees the rule behind it
    const next = recorded(d);
    const changed = JSON.stringify(previous ?? null) !== JSON.stringify(next);
    if (changed) {
      if (d.refused) log.warn('pod not enrolled', { pod, reason: d.refused });
      this.decisions.set(regKey(reg), next);
      this.save();
    }
    if (d.policy) {
      if (!current || JSON.stringify(current) !== JSON.stringify(d.policy)) {
        this.o.enroller.enrol(reg, d.policy);
        log.info(current ? 'pod capture updated' : 'pod enrolled', {
          pod,
          mode: d.mode,
          rule: d.rule,
          netnsCookie: reg.netnsCookie,
        });
      }
    } else if (current) {
      this.o.enroller.release(reg);
      log.info('pod released', { pod, mode: d.mode, rule: d.rule, netnsCookie: reg.netnsCookie });
    }
    // after the kernel: ztunnel takes the pod only once its capture is in place
    if (d.mode === 'ambient' && d.policy) this.handOver(reg);
    else if (current?.mode === 'ambient' || previous?.mode === 'ambient') this.takeBack(reg);
    if (changed) this.o.writeBack?.decided(reg, d, previous?.mode ?? 'none');
    return d;
  }

  /** CNI DEL: the registration is gone; its capture, ZDS hand-off and decision go with it. */
  removed(reg: PodRegistration): void {
    this.o.lbOptOut?.forget(reg.netnsCookie);
    this.o.enroller.release(reg);
    if (this.decision(reg)?.mode === 'ambient') this.takeBack(reg);
    this.dirty.delete(regKey(reg));
    if (this.decisions.delete(regKey(reg))) this.save();
  }

  /** A cluster object changed: marks the registrations whose decision may change. */
  changed(ev: ChangeEvent): void {
    if (ev.kind === 'Pod') {
      const obj = (ev.obj ?? ev.old) as Pod;
      for (const reg of this.o.registry.list()) {
        if (reg.namespace === obj.metadata.namespace && reg.name === obj.metadata.name) this.dirty.add(regKey(reg));
      }
    } else if (ev.kind === 'Namespace') {
      const name = (ev.obj ?? ev.old).metadata.name;
      for (const reg of this.o.registry.list()) if (reg.namespace === name) this.dirty.add(regKey(reg));
    }
  }

  /** Every registration is decided again (start: the objects may have changed meanwhile). */
  markAll(): void {
    for (const reg of this.o.registry.list()) this.dirty.add(regKey(reg));
  }

  /** Re-decides the marked registrations; a failure is logged and leaves the others alone. */
  flush(): number {
    if (this.dirty.size === 0) return 0;
    const keys = new Set(this.dirty);
    this.dirty.clear();
    let n = 0;
    for (const reg of this.o.registry.list()) {
      if (!keys.has(regKey(reg))) continue;
      n++;
      try {
        this.apply(reg);
      } catch (e) {
        log.error('capture update failed', { pod: podLabel(reg), err: e });
      }
    }
    return n;
  }

  /** Decisions of registrations that no longer exist (gone while the agent was down). */
  prune(): void {
    const live = new Set(this.o.registry.list().map(regKey));
    let pruned = false;
    for (const k of this.decisions.keys()) {
      if (!live.has(k)) {
        this.decisions.delete(k);
        pruned = true;
      }
    }
    if (pruned) this.save();
  }

  private pod(reg: PodRegistration): Pod | undefined {
    return this.o.store.get(`Pod/${reg.namespace}/${reg.name}`) as Pod | undefined;
  }

  /** The pod's uid as ZDS names it: from CNI_ARGS, else from its Pod object. */
  podUid(reg: PodRegistration): string {
    return reg.uid || this.pod(reg)?.metadata.uid || '';
  }

  /** An ambient pod goes to ztunnel over ZDS (without ZDS: its capture is all there is). */
  private handOver(reg: PodRegistration): void {
    if (!this.o.zds) return this.o.writeBack?.redirection(reg, 'enabled');
    const uid = this.podUid(reg);
    if (!uid) {
      log.warn('ambient pod without a uid: not handed to ztunnel', { pod: podLabel(reg) });
      return;
    }
    const serviceAccount = this.pod(reg)?.spec.serviceAccountName || 'default';
    this.o.zds.enrolled({ uid, name: reg.name, namespace: reg.namespace, serviceAccount, netnsPath: reg.netnsPath });
  }

  /** The pod left ambient mode (or is gone): ztunnel drops it, its status annotation goes. */
  private takeBack(reg: PodRegistration): void {
    const uid = this.podUid(reg);
    if (uid) void this.o.zds?.released(uid);
    this.o.writeBack?.redirection(reg, null);
  }

  /** Written at once (before the kernel changes: see apply), atomically. */
  private save(): void {
    const file = this.o.decisionsFile;
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.decisions)) + '\n');
      fs.renameSync(tmp, file);
    } catch (e) {
      log.warn('cannot save mesh decisions', { file, err: (e as Error).message });
    }
  }
}
