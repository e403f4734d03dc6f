/* Joins two simulated nodes with a veth pair between their node namespaces and routes each
 * node's pod ranges through it, as two hosts on one L2 segment. Created inside the node
 * namespaces only; destroying either node removes the pair.
 */
import { run } from './exec';
import type { SimNode } from './sim-node';

let joins = 0;

export async function joinNodes(a: SimNode, b: SimNode): Promise<{ aAddr4: string; bAddr4: string }> {
  const n = (joins++ % 200) + 20;
  const [va, vb] = [`slj${n}a`, `slj${n}b`];
  const aAddr4 = `10.250.${n}.1`;
  const bAddr4 = `10.250.${n}.2`;
  const inA = (cmd: string[]) => run(['nsenter', `--net=${a.netnsPath}`, '--', ...cmd]);
  const inB = (cmd: string[]) => run(['nsenter', `--net=${b.netnsPath}`, '--', ...cmd]);
  await inA(['ip', 'link', 'add', va, 'type', 'veth', 'peer', 'name', vb, 'netns', b.netnsName]);
  await inA(['ip', 'addr', 'add', `${aAddr4}/30`, 'dev', va]);
  await inB(['ip', 'addr', 'add', `${bAddr4}/30`, 'dev', vb]);
  await inA(['ip', '-6', 'addr', 'add', `fd00:250:${n}::1/64`, 'dev', va, 'nodad']);
  await inB(['ip', '-6', 'addr', 'add', `fd00:250:${n}::2/64`, 'dev', vb, 'nodad']);
  await inA(['ip', 'link', 'set', va, 'up']);
  await inB(['ip', 'link', 'set', vb, 'up']);
  await inA(['ip', 'route', 'add', b.cidr4, 'via', bAddr4]);
  await inB(['ip', 'route', 'add', a.cidr4, 'via', aAddr4]);
  if (a.cidr6 && b.cidr6) {
    await inA(['ip', '-6', 'route', 'add', b.cidr6, 'via', `fd00:250:${n}::2`]);
    await inB(['ip', '-6', 'route', 'add', a.cidr6, 'via', `fd00:250:${n}::1`]);
  }
  for (const inX of [inA, inB]) {
    await inX(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await inX(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
  }
  return { aAddr4, bAddr4 };
}
