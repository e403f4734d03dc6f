/* Scene 2: socket-level load balancing. A Service VIP, a client pod connecting to it, the two
 * backends answering, what the pinned maps hold; then the agent killed and restarted while the
 * datapath keeps answering from its pins.
 */
import {
  answeredBy,
  probe,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  waitForBackends,
  writeObjects,
} from '../kernel/lb-env';
import { SVC_PORT, VIP, type DemoCtx } from './context';
import { check, say, scene, shell, tally } from './narrate';

export async function showSocketLb(ctx: DemoCtx): Promise<void> {
  const { env } = ctx;
  const [a, b] = env.backends;
  scene('Socket-LB: connect() to a Service VIP is sent to a backend before any packet exists');
  writeObjects(env, 'svc-web.yaml', [
    serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: SVC_PORT, targetPort: TCP_PORT }] }),
    sliceYaml('web-1', {
      service: 'web',
      family: 4,
      endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
      ports: [{ name: 'http', port: TCP_PORT }],
    }),
  ]);
  say(
    `Service default/web ${VIP}:${SVC_PORT} → pods ${a.name} and ${b.name} on :${TCP_PORT} (a Service and an EndpointSlice written to the objects dir)`,
  );
  await waitForBackends(env, `${VIP}:${SVC_PORT}/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  shell('sluice bpf lb list', (await sluice(env, ['bpf', 'lb', 'list'])).stdout);

  const res = await probe(env, VIP, SVC_PORT, { count: 20 });
  check(
    res.length === 20 && res.every((r) => r.ok),
    `20 connections from pod client to ${VIP}:${SVC_PORT} succeed`,
    res.filter((r) => !r.ok),
  );
  const who = res.map(answeredBy);
  check(who.includes(a.name) && who.includes(b.name), 'both backends answered', tally(who));
  const peers = [...new Set(res.map((r) => r.peer))];
  check(peers.length === 1 && peers[0] === `${VIP}:${SVC_PORT}`, "the client's getpeername shows the VIP", peers);
  say(`20 connections from pod client to ${VIP}:${SVC_PORT}:`);
  say(`  answered by   ${tally(who)}`);
  say(`  getpeername   ${peers[0]}   (the client still sees the VIP)`);

  scene('The agent is killed (SIGKILL): the datapath keeps working from its pins');
  await stopAgent(env, 'SIGKILL');
  const down = await probe(env, VIP, SVC_PORT, { count: 10 });
  check(
    down.every((r) => r.ok),
    'connections to the VIP succeed while the agent is down',
    down.filter((r) => !r.ok),
  );
  say(`agent down, 10 connections to ${VIP}:${SVC_PORT}: answered by ${tally(down.map(answeredBy))}`);
  await startAgent(env);
  say('a new agent re-opens the pins and swaps its programs into the existing links');
  shell('sluice status', (await sluice(env, ['status'])).stdout);
}
