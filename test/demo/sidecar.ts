/* Scene 3: an Istio sidecar pod. Its app connects to the VIP; the kernel hands the connection to
 * the sidecar (the stand-in `sl-probe sidecar`, uid/gid 1337 like Envoy) with the VIP as the
 * original destination, and the sidecar's own upstream connect to that VIP is load-balanced.
 */
import { probe, sluice } from '../kernel/lb-env';
import { addMeshPod, sidecarReply, startSidecar, waitForMode } from '../kernel/mesh-env';
import { SVC_PORT, VIP, type DemoCtx } from './context';
import { check, say, scene, shell, tally } from './narrate';

/** What Istio's injector writes on a pod it gave a sidecar. */
const INJECTED = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };

export async function showSidecar(ctx: DemoCtx): Promise<void> {
  const { env } = ctx;
  const backends = env.backends.map((p) => p.name);
  scene('Istio sidecar mode: capture first for the app, socket-LB for the proxy');
  say('pod default/reviews carries sidecar.istio.io/status (Istio injected it); added through bridge + sluice-cni');
  const pod = await addMeshPod(env, 'reviews', { annotations: INJECTED });
  ctx.sidecarPod = pod;
  await waitForMode(env, pod, 'sidecar');
  const list = (await sluice(env, ['endpoint', 'list'])).stdout;
  const line = list.split('\n').find((l) => l.includes('default/reviews'));
  check(line?.split(/\s+/)[2] === 'mode=sidecar', 'endpoint list shows default/reviews mode=sidecar', line);
  say('captured as soon as its CNI ADD returned (no istio-init, no iptables in the pod):');
  shell('sluice endpoint list | grep default/reviews', line!);

  await startSidecar(env, pod);
  say('the stand-in sidecar listens on 15001/15006 as uid 1337; the app connects to the VIP 10 times:');
  const res = await probe(env, VIP, SVC_PORT, { from: pod, count: 10 });
  const replies = res.map((r) => sidecarReply(r.reply));
  check(
    replies.every((r) => r?.via === 'out' && r.orig === `${VIP}:${SVC_PORT}`),
    'every connection reached the sidecar with the VIP as original destination',
    res,
  );
  check(
    res.every((r) => r.peer === `${VIP}:${SVC_PORT}`),
    "the app's getpeername shows the VIP",
    res.map((r) => r.peer),
  );
  const upstream = replies.map((r) => r?.upstream?.split(' ')[0]);
  check(
    upstream.every((u) => u !== undefined && backends.includes(u)),
    "the sidecar's upstream connects reached the backends",
    upstream,
  );
  shell(`sl-probe connect --addr ${VIP} --port ${SVC_PORT}   # in pod reviews, one of the 10 answers`, res[0].reply ?? '');
  say(`  the proxy saw         orig=${VIP}:${SVC_PORT} (SO_ORIGINAL_DST) on all 10: the service identity is kept`);
  say(`  the app's peer        ${res[0].peer}`);
  say(`  proxy's upstream      ${tally(upstream)}   (its own connect to the VIP, load-balanced by socket-LB)`);
}
