/*
 * Self-test of the kernel-test harness: a simulated node with two pods wired
 * by the reference bridge/host-local/loopback CNI plugins.
 * Needs root. Run: npx vitest run test/kernel/harness.test.ts
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cniCheck, createNode, findCgroup2Mount, ipInCidr, run, type SimNode, type SimPod, sweepStale } from '../harness';

const NODE = process.execPath;

/* Echo server: prints "LISTENING <port>" and answers each connection with "pong <peer address> <what it read>". */
const SERVER = `
const net = require('net');
const port = Number(process.argv[1]);
const srv = net.createServer((s) => {
  s.once('data', (d) => s.end('pong ' + s.remoteAddress + ' ' + d.toString().trim() + '\\n'));
  s.on('error', () => {});
});
srv.listen({ host: '::', port, ipv6Only: false }, () => console.log('LISTENING ' + srv.address().port));
setTimeout(() => process.exit(2), 120000);
`;

/* Client: connects to argv[1]:argv[2], sends "ping", prints the answer. */
const CLIENT = `
const net = require('net');
const s = net.connect({ host: process.argv[1], port: Number(process.argv[2]), timeout: 5000 });
let buf = '';
s.on('connect', () => s.write('ping\\n'));
s.on('data', (d) => (buf += d));
s.on('end', () => { process.stdout.write(buf); process.exit(0); });
s.on('timeout', () => { console.error('timeout'); process.exit(3); });
s.on('error', (e) => { console.error(e.message); process.exit(4); });
`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(process.getuid?.() !== 0)('sim-node harness (needs root)', () => {
  let node: SimNode;
  let a: SimPod;
  let b: SimPod;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    await sweepStale();
    let t = Date.now();
    node = await createNode();
    timings.createNode = Date.now() - t;
    t = Date.now();
    a = await node.addPod('pod-a');
    timings.addPodA = Date.now() - t;
    t = Date.now();
    b = await node.addPod('pod-b', { namespace: 'other' });
    timings.addPodB = Date.now() - t;
    console.log(`[timings] ${JSON.stringify(timings)}`);
  }, 60000);

  afterAll(async () => {
    await node?.destroy();
  }, 60000);

  it('creates the node resources', () => {
    expect(node.id).toMatch(/^sltest-[0-9a-f]{6}$/);
    expect(fs.existsSync(node.netnsPath)).toBe(true);
    expect(fs.statSync(node.cgroupPath).isDirectory()).toBe(true);
    expect(path.dirname(node.cgroupPath)).toBe(findCgroup2Mount());
    expect(fs.statSync(node.pinDir).isDirectory()).toBe(true);
    expect(fs.statSync(node.workDir).isDirectory()).toBe(true);
    expect(ipInCidr(node.gateway4, node.cidr4)).toBe(true);
    expect(ipInCidr(node.gateway6!, node.cidr6!)).toBe(true);
  });

  it('keeps the bridge out of the machine netns', async () => {
    const host = await run(['ip', 'link', 'show', 'slbr0'], { allowFail: true });
    expect(host.code).not.toBe(0);
    const inNode = await node.exec(['ip', '-o', 'addr', 'show', 'dev', 'slbr0'], { inCgroup: false });
    expect(inNode.stdout).toContain(`${node.gateway4}/`);
    expect(inNode.stdout).toContain(`${node.gateway6}/`);
  });

  it('gives each pod an IPv4 and an IPv6 address from the node ranges', async () => {
    for (const p of [a, b]) {
      expect(ipInCidr(p.ipv4, node.cidr4)).toBe(true);
      expect(ipInCidr(p.ipv6!, node.cidr6!)).toBe(true);
      expect(p.ipv4).not.toBe(node.gateway4);
      const addrs = await node.exec(['ip', '-o', 'addr', 'show', 'dev', 'eth0'], { netnsPath: p.netnsPath });
      expect(addrs.stdout).toContain(`${p.ipv4}/24`);
      expect(addrs.stdout).toContain(`${p.ipv6}/64`);
      expect(addrs.stdout).not.toMatch(/tentative/);
      const lo = await node.exec(['ip', '-o', 'link', 'show', 'dev', 'lo'], { netnsPath: p.netnsPath });
      expect(lo.stdout).toMatch(/[<,]UP[,>]/);
    }
    expect(a.ipv4).not.toBe(b.ipv4);
    expect(a.ipv6).not.toBe(b.ipv6);
    expect(b.namespace).toBe('other');
  });

  it('passes CNI CHECK for the pods', async () => {
    await cniCheck(a.conflist, a.runtimeConf, a.result);
  });

  it('connects pod A to pod B over TCP on IPv4 and IPv6', async () => {
    const srv = node.spawn([NODE, '-e', SERVER, '8080'], { netnsPath: b.netnsPath });
    await node.waitForLine(srv, /^LISTENING 8080$/);
    for (const dst of [b.ipv4, b.ipv6!]) {
      const r = await node.exec([NODE, '-e', CLIENT, dst, '8080'], { netnsPath: a.netnsPath, timeoutMs: 10000 });
      const peer = dst.includes(':') ? a.ipv6! : a.ipv4;
      expect(r.stdout.trim()).toMatch(new RegExp(`^pong (::ffff:)?${peer.replace(/\./g, '\\.')} ping$`));
    }
  });

  it('connects a pod to the node gateway on both families', async () => {
    const srv = node.spawn([NODE, '-e', SERVER, '9090']);
    await node.waitForLine(srv, 'LISTENING 9090');
    for (const dst of [node.gateway4, node.gateway6!]) {
      const r = await node.exec([NODE, '-e', CLIENT, dst, '9090'], { netnsPath: a.netnsPath, timeoutMs: 10000 });
      expect(r.stdout).toContain('pong');
    }
  });

  it('puts spawned processes in the node cgroup, unless asked not to', async () => {
    const want = `0::/${path.basename(node.cgroupPath)}`;
    const srv = node.spawn(['sleep', '60'], { netnsPath: b.netnsPath });
    await new Promise((r) => setTimeout(r, 200));
    const cg = fs.readFileSync(`/proc/${srv.pid}/cgroup`, 'utf8');
    expect(cg.split('\n')).toContain(want);
    // same netns as pod B
    expect(fs.readlinkSync(`/proc/${srv.pid}/ns/net`)).toBe(`net:[${fs.statSync(b.netnsPath).ino}]`);
    const procs = fs.readFileSync(path.join(node.cgroupPath, 'cgroup.procs'), 'utf8').split('\n');
    expect(procs).toContain(String(srv.pid));

    const inside = await node.exec(['cat', '/proc/self/cgroup']);
    expect(inside.stdout.split('\n')).toContain(want);
    const outside = await node.exec(['cat', '/proc/self/cgroup'], { inCgroup: false });
    expect(outside.stdout.split('\n')).not.toContain(want);
  });

  it('runs as another user and reports failures', async () => {
    const r = await node.exec(['id', '-u'], { uid: 65534, gid: 65534 });
    expect(r.stdout.trim()).toBe('65534');
    const g = await node.exec(['id', '-G'], { uid: 65534, gid: 65534 });
    expect(g.stdout.trim()).toBe('65534');
    await expect(node.exec(['sh', '-c', 'echo boom >&2; exit 3'])).rejects.toThrow(/code 3[\s\S]*boom/);
    const f = await node.exec(['sh', '-c', 'exit 5'], { allowFail: true });
    expect(f.code).toBe(5);
    const dead = node.spawn(['sh', '-c', 'echo hello; echo oops >&2; exit 1']);
    await expect(node.waitForLine(dead, 'never')).rejects.toThrow(/oops/);
    await expect(node.waitForLine(dead, /^hel+o$/)).resolves.toBe('hello');
    const slow = node.spawn(['sleep', '30']);
    await expect(node.waitForLine(slow, 'x', 300)).rejects.toThrow(/timed out/);
  });

  it('removes a pod and releases its addresses', async () => {
    const c = await node.addPod('pod-c');
    const ipamDir = path.join(node.workDir, 'ipam', node.id);
    expect(fs.existsSync(path.join(ipamDir, c.ipv4))).toBe(true);
    const srv = node.spawn(['sleep', '60'], { netnsPath: c.netnsPath });
    await node.removePod(c);
    expect(fs.existsSync(c.netnsPath)).toBe(false);
    expect(fs.existsSync(path.join(ipamDir, c.ipv4))).toBe(false);
    expect(node.pods).not.toContain(c);
    expect(alive(srv.pid!)).toBe(false);
  }, 30000);

  it('destroys everything, twice harmlessly', async () => {
    const srv = node.spawn(['sleep', '60']);
    const outsider = node.spawn(['sleep', '60'], { inCgroup: false });
    fs.mkdirSync(path.join(node.pinDir, 'sub'));
    const podNetns = [a.netnsPath, b.netnsPath];
    const t = Date.now();
    await node.destroy();
    console.log(`[timings] destroy ${Date.now() - t} ms`);
    expect(node.destroyReport).toEqual([]);
    for (const p of [node.netnsPath, ...podNetns, node.cgroupPath, node.pinDir, node.workDir]) {
      expect(fs.existsSync(p), p).toBe(false);
    }
    expect(alive(srv.pid!)).toBe(false);
    expect(alive(outsider.pid!)).toBe(false);
    await node.destroy();
    await expect(node.addPod('late')).rejects.toThrow(/destroyed/);
    const names = [
      ...(await run(['ip', 'netns', 'list'])).stdout.split('\n'),
      ...fs.readdirSync('/sys/fs/bpf'),
      ...fs.readdirSync(findCgroup2Mount()),
    ];
    expect(names.filter((n) => n.includes(node.id))).toEqual([]);
  }, 30000);
});
