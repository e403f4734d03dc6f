/* Scene 4: Istio ambient mode. A namespace is labelled while its pod runs; the pod is enrolled
 * live and handed to the ztunnel stand-in (build/zt-standin) over ZDS, which then receives the
 * pod's outbound connection with its original destination.
 */
import { waitFor } from '../harness';
import { probe, sluice, writeObjects } from '../kernel/lb-env';
import { addMeshPod, namespaceYaml, waitForMode } from '../kernel/mesh-env';
import { startZtunnel, udsPath, ztReply, type ZtEvent } from '../kernel/ztunnel-env';
import { SVC_PORT, VIP, type DemoCtx } from './context';
import { check, say, scene, shell } from './narrate';

const NAMESPACE = 'shop';
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };

interface ListedZds {
  name: string;
  namespace: string;
  mode: string;
  zds?: { state: string };
}

/** The stand-in's own output lines (one JSON event each) from index `from` on, `conn` events left out. */
function eventLines(events: ZtEvent[], from = 0, to = events.length): string {
  return events
    .slice(from, to)
    .filter((e) => e.event !== 'conn')
    .map((e) => JSON.stringify(e))
    .join('\n');
}

export async function showAmbient(ctx: DemoCtx): Promise<void> {
  const { env } = ctx;
  const backends = env.backends.map((p) => p.name);
  scene('Istio ambient mode: a namespace labelled live, pods handed to ztunnel over ZDS');
  writeObjects(env, `ns-${NAMESPACE}.yaml`, [namespaceYaml(NAMESPACE)]);
  const pod = await addMeshPod(env, 'cart', { namespace: NAMESPACE });
  ctx.ambientPod = pod;
  await waitForMode(env, pod, 'none');
  say(`pod ${NAMESPACE}/cart runs in an unlabelled namespace: not captured`);

  const zt = startZtunnel(env, 'zt1');
  await zt.waitEvent((e) => e.event === 'snapshot');
  const snapshotAt = zt.events().findIndex((e) => e.event === 'snapshot');
  check(
    !zt
      .events()
      .slice(0, snapshotAt)
      .some((e) => e.event === 'add'),
    'the first snapshot holds no pod',
    zt.events(),
  );
  say("the ztunnel stand-in connects to the agent's ZDS socket: hello, then the snapshot of ambient pods (none yet):");
  shell(`zt-standin --uds ${udsPath(env)} --id zt1   # its output`, eventLines(zt.events(), 0, snapshotAt + 1));

  const from = zt.events().length;
  say(`kubectl label namespace ${NAMESPACE} istio.io/dataplane-mode=ambient   (the Namespace object rewritten)`);
  writeObjects(env, `ns-${NAMESPACE}.yaml`, [namespaceYaml(NAMESPACE, AMBIENT)]);
  await waitForMode(env, pod, 'ambient', 8000);
  await zt.waitEvent((e) => e.event === 'add' && e.uid === pod.uid, { from });
  await waitFor(
    'cart zds=acked',
    async () => {
      const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as ListedZds[];
      return eps.find((e) => e.name === 'cart' && e.namespace === NAMESPACE)?.zds?.state === 'acked';
    },
    8000,
  );
  say("enrolled without a restart; the agent sent AddWorkload with the pod's netns, ztunnel acked:");
  shell('zt-standin … (continued)', eventLines(zt.events(), from));

  const [r] = await probe(env, VIP, SVC_PORT, { from: pod, timeoutMs: 2000 });
  const z = ztReply(r?.reply);
  check(
    z?.via === 'out' && z.orig === `${VIP}:${SVC_PORT}`,
    `cart's connect to ${VIP}:${SVC_PORT} reached ztunnel's 15001 with the VIP as original destination`,
    r,
  );
  check(z.peer?.split(':')[0] === pod.ipv4, "ztunnel sees the pod's own IP as the source", z);
  check(backends.includes(z.upstream?.split(' ')[0] ?? ''), "ztunnel's own upstream connect was load-balanced to a backend", z);
  say(`cart connects to ${VIP}:${SVC_PORT}; the reply comes from ztunnel, which saw:`);
  shell(`sl-probe connect --addr ${VIP} --port ${SVC_PORT}   # in pod cart`, r.reply ?? '');
  say(
    `  via=out orig=${z.orig} (SO_ORIGINAL_DST), peer=${z.peer} (the pod's IP), upstream answered by ${z.upstream?.split(' ')[0]}`,
  );

  const list = (await sluice(env, ['endpoint', 'list'])).stdout;
  const line = list.split('\n').find((l) => l.includes(`${NAMESPACE}/cart`));
  check(
    line !== undefined && line.split(/\s+/)[2] === 'mode=ambient' && line.includes('zds=acked'),
    'endpoint list shows shop/cart mode=ambient zds=acked',
    line,
  );
  shell('sluice endpoint list', list);
}
