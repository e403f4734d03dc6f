/* `make demo`: sluice on a simulated node. A node namespace, three pods wired by the reference
 * bridge/host-local/loopback CNI plugins, a Service with two backends, the agent in standalone
 * mode; connections to the VIP spread over the backends. Everything is removed at the end.
 */
import { run } from '../harness';
import {
  answeredBy, createLbEnv, probe, serviceYaml, sliceYaml, SLUICE, startAgent, stopAgent, TCP_PORT, UDP_PORT,
  waitForBackends, writeObjects, type LbEnv,
} from '../kernel/lb-env';

const VIP = '10.96.0.10';

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

function tally(results: Array<{ ok: boolean; reply?: string }>): string {
  const counts = new Map<string, number>();
  for (const r of results) {
    const who = answeredBy(r as never) ?? 'failed';
    counts.set(who, (counts.get(who) ?? 0) + 1);
  }
  return [...counts].sort().map(([k, v]) => `${k}: ${v}`).join(', ');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (network namespaces, cgroups, eBPF)');
  say('simulated node: a node namespace and pods wired by bridge + host-local + loopback');
  const env: LbEnv = await createLbEnv({ backends: 2 });
  try {
    for (const p of [env.client, ...env.backends]) console.log(`  pod ${p.name.padEnd(7)} ${p.ipv4.padEnd(14)} ${p.ipv6 ?? ''}`);
    const [a, b] = env.backends;
    writeObjects(env, 'web.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }, { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' }] }),
      sliceYaml('web-1', {
        service: 'web', family: 4, endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }, { name: 'dns', port: UDP_PORT, protocol: 'UDP' }],
      }),
    ]);
    say(`agent in standalone mode (objects from ${env.objectsDir})`);
    await startAgent(env);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    console.log((await run([SLUICE, 'status', '--config', env.configPath])).stdout.trim());

    say(`sluice bpf lb list`);
    process.stdout.write((await run([SLUICE, 'bpf', 'lb', 'list', '--config', env.configPath])).stdout);

    say(`100 TCP connections from pod client to ${VIP}:80`);
    const tcp = await probe(env, VIP, 80, { count: 100 });
    console.log(`  answered by  ${tally(tcp)}`);
    console.log(`  getpeername  ${[...new Set(tcp.map((r) => r.peer))].join(', ')}  (the VIP, not the backend)`);

    say(`100 UDP datagrams, a new socket each, to ${VIP}:53`);
    const udp = await probe(env, VIP, 53, { proto: 'udp', udpMode: 'unconnected', count: 100 });
    console.log(`  answered by  ${tally(udp)}`);
    console.log(`  reply from   ${[...new Set(udp.map((r) => r.peer))].join(', ')}`);

    say('the agent is killed (SIGKILL): the datapath keeps working from its pins');
    await stopAgent(env, 'SIGKILL');
    const down = await probe(env, VIP, 80, { count: 20 });
    console.log(`  answered by  ${tally(down)}`);

    say('datapath counters');
    process.stdout.write((await run([SLUICE, 'bpf', 'lb', 'counters', '--config', env.configPath])).stdout);

    say('sluice uninstall');
    process.stdout.write((await run([SLUICE, 'uninstall', '--config', env.configPath])).stdout);
  } finally {
    await stopAgent(env);
    await env.node.destroy();
    say('cleaned up: namespaces, cgroup, pins and temp files removed');
  }
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
