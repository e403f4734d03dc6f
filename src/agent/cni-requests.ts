/* The agent's answer to a CNI request on the local API (the C plugin, cni/dispatch.c, forwards
 * each command there). handleCni (src/cni/handler.ts) does the command; this adds what needs the
 * rest of the agent: the Pod read from the API server when the store has not seen it yet, the
 * mesh decision applied before ADD returns, the wait for ztunnel's answer for an ambient pod, one
 * log line per request and the request metrics.
 */
import { cniError, handleCni, PodRefusedError, type CniReply, type CniRequest } from '../cni/handler';
import { CniCode, parseCniArgs } from '../cni/spec';
import type { ApiSource } from '../k8s/api-source';
import type { ObjectStore } from '../k8s/store';
import { log } from '../log';
import type { AmbientZds } from '../mesh/ambient-zds';
import type { MeshController } from '../mesh/controller';
import type { Enroller } from '../mesh/enroller';
import type { AgentMetrics } from '../metrics';
import { RawReply } from './local-api';
import { podLabel, type PodRegistration, type PodRegistry } from './pod-registry';

/** How long a CNI ADD of an ambient pod waits for ztunnel's answer (istio-cni's deadline). */
export const ZDS_ADD_WAIT_MS = 5000;

/**
 * What a CNI request needs of the agent. The parts the agent creates while it starts (or not at
 * all, by config) are functions, asked at every request, that return undefined until then.
 */
export interface CniRequestDeps {
  registry: PodRegistry;
  /** the agent's readiness for pods (see CniDeps.readiness) */
  readiness(): { ready: boolean; reason: string };
  /** the agent's objects: an ADD whose Pod is not there asks the API server for it */
  store: Pick<ObjectStore, 'get'>;
  /** API mode only: where a Pod the store lacks is read from (bounded) */
  apiSource(): Pick<ApiSource, 'getPod'> | undefined;
  /** decides and programs a pod's capture (ADD), and forgets it (DEL, GC) */
  mesh(): Pick<MeshController, 'apply' | 'removed' | 'podUid'> | undefined;
  /** what the kernel holds for a pod (is it ambient?) */
  enroller(): Pick<Enroller, 'programmed'> | undefined;
  /** with a ztunnel address configured: ztunnel's answer for a pod */
  zds(): Pick<AmbientZds, 'waitForAnswer'> | undefined;
  /** counts every request by command and result. Default: not counted. */
  metrics?: Pick<AgentMetrics, 'cni'>;
}

export class CniRequests {
  constructor(private readonly deps: CniRequestDeps) {}

  /** Answers one request as the plugin prints it (`<exit code>\n<stdout>`). Never throws. */
  handle(req: CniRequest): Promise<RawReply> {
    const metrics = this.deps.metrics;
    return metrics ? metrics.cni(String(req.command), () => this.answer(req)) : this.answer(req);
  }

  private async answer(req: CniRequest): Promise<RawReply> {
    const t0 = process.hrtime.bigint();
    const { registry, apiSource, mesh, enroller, zds } = this.deps;
    const args = parseCniArgs(req.env?.CNI_ARGS);
    let reply: CniReply;
    try {
      // CNI ADD can come before the Pod's watch event: the capture decision must still be made
      // now, so a cache miss asks the API server (bounded); no answer fails ADD with 11.
      const api = apiSource();
      const missing = req.command === 'ADD' && api ? this.missingPod(args) : undefined;
      if (missing) {
        try {
          await api!.getPod(missing.namespace, missing.name);
        } catch (e) {
          const r = cniError(
            req.stdin,
            CniCode.tryAgainLater,
            'sluice agent cannot read the Pod from the API server; try again later',
            (e as Error).message,
          );
          return new RawReply(`${r.code}\n${r.stdout}`);
        }
      }
      let added: PodRegistration | undefined;
      reply = handleCni(req, {
        registry,
        readiness: () => this.deps.readiness(),
        // capture is in place before ADD returns: the pod's containers start right after
        onAdd: (reg) => {
          added = reg;
          const d = mesh()?.apply(reg);
          // as istio-cni: an invalid capture annotation fails the pod's start, naming it, rather
          // than letting the pod run outside the mesh
          if (d?.refused) {
            mesh()?.removed(reg);
            throw new PodRefusedError(d.refused);
          }
        },
        onDel: (reg) => mesh()?.removed(reg),
      });
      // with a ztunnel connected, an ambient pod starts once ztunnel serves it (bounded); the
      // kernel fails its traffic closed until then, and a nack is retried in the background
      const z = zds();
      if (added && reply.code === 0 && z && enroller()?.programmed(added.netnsCookie)?.mode === 'ambient') {
        const st = await z.waitForAnswer(mesh()!.podUid(added), ZDS_ADD_WAIT_MS);
        if (st && st.state !== 'acked')
          log.warn('pod started before ztunnel took it', { pod: podLabel(added), zds: st.state, error: st.error });
      }
    } catch (e) {
      // handleCni answers every CNI failure itself; this is a bug, still answered in CNI's terms
      reply = cniError(req.stdin, CniCode.tryAgainLater, 'sluice agent failed', (e as Error).message);
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const fields = {
      command: req.command,
      containerId: req.env?.CNI_CONTAINERID,
      pod: `${args.K8S_POD_NAMESPACE}/${args.K8S_POD_NAME}`,
      exit: reply.code,
      ms: Math.round(ms * 100) / 100,
    };
    if (reply.code === 0) log.info('cni', fields);
    else log.warn('cni failed', { ...fields, error: reply.stdout.trim() });
    return new RawReply(`${reply.code}\n${reply.stdout}`);
  }

  /** The Pod an ADD names, when the store does not hold it yet. */
  private missingPod(args: Record<string, string>): { namespace: string; name: string } | undefined {
    const namespace = args.K8S_POD_NAMESPACE;
    const name = args.K8S_POD_NAME;
    if (!namespace || !name || this.deps.store.get(`Pod/${namespace}/${name}`)) return undefined;
    return { namespace, name };
  }
}
