/* The pure halves of `sluice doctor`: each check judged on facts built here, so that every status
 * and message a broken state can produce is exercised without a kernel.
 */
import { describe, expect, it } from 'vitest';
import type { PodRegistration } from '../../src/agent/pod-registry';
import { POL_NO_INBOUND, type Policy } from '../../src/bpf/layout';
import { programSettings, type ProgramSettingsInput } from '../../src/datapath';
import { judgeCni, runtimeConfig, type CniFacts } from '../../src/doctor/cni';
import { judgeCluster } from '../../src/doctor/cluster';
import { istioInIptablesSave, istioInNftRuleset } from '../../src/doctor/istio-rules';
import { judgeKernel, kernelVersion, mountFor, type KernelFacts } from '../../src/doctor/kernel';
import { frontendDifferences, judgeLb, type LbFacts } from '../../src/doctor/lb';
import { judgeMapPressure } from '../../src/doctor/map-pressure';
import { ciliumConfig, judgeCompat, mtlsMode, selects } from '../../src/doctor/mesh-compat';
import type { ClusterObjects, RawObject } from '../../src/doctor/objects';
import {
  judgePods,
  parseListeningPorts,
  requiredProxyPorts,
  ZDS_PENDING_FAIL_MS,
  type PodFacts,
  type PodsFacts,
} from '../../src/doctor/pods';
import { judgeLinks, judgeSettings, type ProgramFacts } from '../../src/doctor/programs';
import { buildReport, exitCode, formatReport, type CheckResult } from '../../src/doctor/report';
import { parseConfig } from '../../src/config';
import type { LbFrontend } from '../../src/lb/model';
import { sidecarPolicy } from '../../src/mesh/sidecar-policy';
import type { Pod } from '../../src/k8s/types';

const cfg = parseConfig({ 'cgroup-root': '/sys/fs/cgroup', 'node-name': 'n1' });
const statuses = (rs: CheckResult[]) => rs.map((r) => r.status);

describe('doctor report', () => {
  it('prints one line per check with the fix, a summary, and exits 1 only on a fail', () => {
    const warnOnly = buildReport([
      { check: 'a', status: 'ok', message: 'fine' },
      { check: 'bb.c', status: 'warn', message: 'odd', fix: 'look' },
    ]);
    expect(formatReport(warnOnly)).toBe('ok    a     fine\nwarn  bb.c  odd — fix: look\nhealthy: 1 ok, 1 warn, 0 fail\n');
    expect(exitCode(warnOnly)).toBe(0);
    const failed = buildReport([...warnOnly.checks, { check: 'd', status: 'fail', message: 'broken', fix: 'mend' }]);
    expect(exitCode(failed)).toBe(1);
    expect(failed.counts).toEqual({ ok: 1, warn: 1, fail: 1 });
    expect(formatReport(failed)).toMatch(/^fail {2}d {5}broken — fix: mend\nunhealthy: 1 ok, 1 warn, 1 fail\n$/m);
  });
});

describe('doctor kernel checks', () => {
  const healthy: KernelFacts = {
    release: '6.18.44-fc',
    features: { btf: true, sk_lookup: true, set_retval: true, tcx: true, sock_destroy: true, netns_cookie: true },
    cgroupRoot: { path: '/sys/fs/cgroup', exists: true, fstype: 'cgroup2', mountPoint: '/sys/fs/cgroup' },
    pinDir: { path: '/sys/fs/bpf/sluice', exists: true, fstype: 'bpf', mountPoint: '/sys/fs/bpf' },
  };

  it('parses kernel releases', () => {
    expect(kernelVersion('6.18.44-fc-v1252')).toEqual([6, 18]);
    expect(kernelVersion('5.4.0-150-generic')).toEqual([5, 4]);
    expect(kernelVersion('weird')).toBeUndefined();
  });

  it('finds the mount holding a path: the longest mount point, the last of equal ones, escapes decoded', () => {
    const mounts = [
      'sysfs /sys sysfs rw 0 0',
      'none /sys/fs/bpf bpf rw 0 0',
      'tmpfs /sys/fs/bpf tmpfs rw 0 0',
      'x /mnt/a\\040b ext4 rw 0 0',
    ].join('\n');
    expect(mountFor('/sys/fs/bpf/sluice', mounts)).toEqual({ mountPoint: '/sys/fs/bpf', fstype: 'tmpfs' });
    expect(mountFor('/sys/fs/bpfx', mounts)).toEqual({ mountPoint: '/sys', fstype: 'sysfs' });
    expect(mountFor('/mnt/a b/c', mounts)).toEqual({ mountPoint: '/mnt/a b', fstype: 'ext4' });
  });

  it('all present: every line ok', () => {
    expect(statuses(judgeKernel(healthy)).every((s) => s === 'ok')).toBe(true);
  });

  it('a kernel below 5.18 fails naming the minimum; a missing must-have fails, tcx and sock_destroy only warn', () => {
    const r = judgeKernel({
      ...healthy,
      release: '5.15.0',
      features: { ...healthy.features, set_retval: false, tcx: false, sock_destroy: false },
    });
    const by = (id: string) => r.find((x) => x.check === id)!;
    expect(by('kernel.version')).toMatchObject({ status: 'fail', message: 'Linux 5.15.0: sluice needs Linux ≥ 5.18' });
    expect(by('kernel.set_retval')).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(/^bpf_set_retval .* absent \(needs Linux ≥ 5\.18\)/),
    });
    expect(by('kernel.tcx')).toMatchObject({
      status: 'warn',
      message: expect.stringMatching(/^tcx links absent \(needs Linux ≥ 6\.6\): ambient pods cannot be enrolled/),
    });
    expect(by('kernel.sock_destroy')).toMatchObject({ status: 'warn', message: expect.stringContaining('needs Linux ≥ 6.5') });
  });

  it('a probe that could not run warns with its error; cgroup-root and the pin dir on the wrong file system fail', () => {
    const r = judgeKernel({
      ...healthy,
      features: { ...healthy.features, sk_lookup: { error: 'EPERM' } },
      cgroupRoot: { path: '/sys/fs/cgroup', exists: true, fstype: 'cgroup', mountPoint: '/sys/fs/cgroup' },
      pinDir: { path: '/sys/fs/bpf/sluice', exists: true, fstype: 'tmpfs', mountPoint: '/sys/fs/bpf' },
    });
    expect(r.find((x) => x.check === 'kernel.sk_lookup')).toMatchObject({
      status: 'warn',
      message: 'cannot probe sk_lookup programs: EPERM',
    });
    expect(r.find((x) => x.check === 'kernel.cgroup2')).toMatchObject({
      status: 'fail',
      message: expect.stringContaining('is on cgroup (mount /sys/fs/cgroup), not cgroup2'),
    });
    expect(r.find((x) => x.check === 'kernel.bpffs')).toMatchObject({
      status: 'fail',
      message: expect.stringContaining('is on tmpfs (mount /sys/fs/bpf), not bpffs'),
    });
    const missing = judgeKernel({ ...healthy, pinDir: { path: '/sys/fs/bpf/sluice', exists: false } });
    expect(missing.find((x) => x.check === 'kernel.bpffs')).toMatchObject({
      status: 'fail',
      message: expect.stringContaining('does not exist'),
    });
  });
});

describe('doctor program checks', () => {
  const settings: ProgramSettingsInput = {
    hostnsOnly: false,
    hostNetnsCookie: 4096n,
    proxyUid: 1337,
    proxyGid: 1337,
    dnsServers: [],
    proxyMark: { mark: 0x539, mask: 0xfff },
  };

  /** A loaded program's .rodata laid out like the object's (every setting, in order). */
  function rodataOf(s: ProgramSettingsInput) {
    const vars: Array<{ name: string; offset: number; size: number }> = [];
    const parts: Buffer[] = [];
    let offset = 0;
    for (const [name, value] of programSettings(s)) {
      vars.push({ name, offset, size: value.length });
      parts.push(value);
      offset += value.length;
    }
    return { vars, value: Buffer.concat(parts) };
  }

  function facts(links: ProgramFacts['links'], expected = settings): ProgramFacts {
    return {
      cgroupRoot: '/sys/fs/cgroup',
      cgroupId: 7n,
      links,
      pinnedProgs: [
        { name: 'sl_sk_lookup', pin: '/p/progs/sl_sk_lookup', exists: true },
        { name: 'sl_lo_mark', pin: '/p/progs/sl_lo_mark', exists: true },
      ],
      expected: programSettings(expected),
      hostNetnsCookieFrom: 'agent',
    };
  }

  const link = (prog: string, target = 7n, loaded = rodataOf(settings)) => ({
    prog,
    pin: `/p/links/${prog}`,
    exists: true,
    link: { type: 3, progId: 10, target },
    loaded: { id: 10, name: prog, rodata: loaded },
  });

  it('attached where the config says: one ok line', () => {
    expect(judgeLinks(facts([link('sl_connect4'), link('sl_sockops')]))).toEqual([
      {
        check: 'datapath.links',
        status: 'ok',
        message:
          '2 programs attached to cgroup-root /sys/fs/cgroup (cgroup id 7) through their pinned links; per-pod programs pinned',
      },
    ]);
  });

  it('socket-destroy iterators are never attached: pinned, they count as fine; missing, a warning only where the kernel can run them', () => {
    const pins = (exists: boolean) =>
      ['sl_destroy_tcp', 'sl_destroy_udp'].map((name) => ({ name, pin: `/p/progs/${name}`, exists }));
    const withIterators = (kernel: boolean | undefined, exists: boolean) => ({
      ...facts([link('sl_connect4')]),
      iterators: { kernel, pins: pins(exists) },
    });
    expect(judgeLinks(withIterators(true, true))).toEqual([
      {
        check: 'datapath.links',
        status: 'ok',
        message:
          '1 program attached to cgroup-root /sys/fs/cgroup (cgroup id 7) through their pinned links; per-pod programs pinned; socket-destroy iterators pinned (run by the agent, not attached)',
      },
    ]);
    const missing = judgeLinks(withIterators(true, false));
    expect(missing.map((x) => [x.status, x.message])).toEqual([
      [
        'warn',
        'socket-destroy iterator sl_destroy_tcp is not pinned at /p/progs/sl_destroy_tcp: sockets left on a backend that left its Service are not destroyed',
      ],
      [
        'warn',
        'socket-destroy iterator sl_destroy_udp is not pinned at /p/progs/sl_destroy_udp: sockets left on a backend that left its Service are not destroyed',
      ],
    ]);
    // an older kernel: nothing to pin, the kernel checks say so
    expect(statuses(judgeLinks(withIterators(false, false)))).toEqual(['ok']);
    expect(statuses(judgeLinks(withIterators(undefined, false)))).toEqual(['ok']);
  });

  it('a missing pin, a detached link, another cgroup and a swapped program each fail by name', () => {
    const r = judgeLinks(
      facts([
        { prog: 'sl_connect4', pin: '/p/links/sl_connect4', exists: false },
        link('sl_connect6', 0n),
        link('sl_sendmsg4', 99n),
        { ...link('sl_recvmsg4'), loaded: { id: 11, name: 'other', rodata: undefined } },
      ]),
    );
    expect(r.map((x) => x.message)).toEqual([
      'sl_connect4: no link pinned at /p/links/sl_connect4: the program is not attached',
      'sl_connect6: the link pinned at /p/links/sl_connect6 is detached (its cgroup is gone or someone detached it): the program runs nowhere',
      'sl_sendmsg4: attached to cgroup id 99, but cgroup-root /sys/fs/cgroup is cgroup id 7',
      'sl_recvmsg4: the link pinned at /p/links/sl_recvmsg4 runs program "other" (id 11)',
    ]);
    expect(statuses(r)).toEqual(['fail', 'fail', 'fail', 'fail']);
  });

  it('settings equal: ok listing them; a changed key fails naming the loaded and the configured value', () => {
    expect(judgeSettings(facts([link('sl_connect4')]))[0]).toMatchObject({
      status: 'ok',
      message: expect.stringContaining('bpf-lb-sock-hostns-only=false'),
    });
    const r = judgeSettings(facts([link('sl_connect4'), link('sl_connect6')], { ...settings, hostnsOnly: true, proxyUid: 1000 }));
    expect(r.map((x) => [x.status, x.message])).toEqual([
      ['fail', 'cfg_hostns_only: the loaded programs have false, bpf-lb-sock-hostns-only is true now (sl_connect4, sl_connect6)'],
      ['fail', 'cfg_proxy_uid: the loaded programs have 1337, mesh-proxy-uid is 1000 now (sl_connect4, sl_connect6)'],
    ]);
    expect(r[0].fix).toMatch(/^restart the agent/);
  });

  it('mesh-dns-servers and the mark show in their own terms; an unknown setting warns', () => {
    const loaded = rodataOf({ ...settings, dnsServers: ['10.96.0.10'] });
    loaded.vars.push({ name: 'cfg_future', offset: loaded.value.length, size: 1 });
    loaded.value = Buffer.concat([loaded.value, Buffer.from([1])]);
    const r = judgeSettings(facts([link('sl_connect4', 7n, loaded)], { ...settings, proxyMark: { mark: 0x600, mask: 0xfff } }));
    expect(r.map((x) => x.message)).toEqual([
      'cfg_proxy_mark: the loaded programs have 0x539, ambient-proxy-mark (mark) is 0x600 now (sl_connect4)',
      'cfg_dns_servers: the loaded programs have 10.96.0.10, mesh-dns-servers is (empty: every resolver) now (sl_connect4)',
      'cfg_n_dns_servers: the loaded programs have 1, mesh-dns-servers (count) is 0 now (sl_connect4)',
      'cfg_future: a setting this sluice does not know, in sl_connect4: the programs come from another sluice version',
    ]);
    expect(statuses(r)).toEqual(['fail', 'fail', 'fail', 'warn']);
  });
});

describe('doctor socket-LB checks', () => {
  const fe = (id: string, service: string, backends: string[], extra: Partial<LbFrontend> = {}): LbFrontend => {
    const [ip, rest] = id.split(/:(?=\d+\/)/);
    const [port, proto] = rest.split('/');
    return {
      id,
      service,
      portName: '',
      ip,
      port: Number(port),
      proto: proto as 'TCP',
      family: 4,
      scope: 'clusterIP',
      affinityTimeoutSec: 0,
      noLocalEndpoints: false,
      zoneSensitive: false,
      backends: backends.map((b) => ({ ip: b.split(':')[0], port: Number(b.split(':')[1]) })),
      stillServing: [],
      ...extra,
    };
  };
  const listed = (frontend: string, backends: string[], extra = {}) => ({
    frontend,
    id: 1,
    scope: 'clusterIP' as const,
    affinitySec: 0,
    noLocalEndpoints: false,
    backends,
    ...extra,
  });

  it('equal maps: one ok line counting frontends and Services', () => {
    const f: LbFacts = {
      origin: '/objects',
      model: [fe('10.96.0.1:80/TCP', 'a/web', ['10.1.0.1:8080'])],
      pinned: [listed('10.96.0.1:80/TCP', ['10.1.0.1:8080'])],
    };
    expect(judgeLb(f)).toEqual([
      {
        check: 'lb.services',
        status: 'ok',
        message: 'the pinned maps hold the model exactly: 1 frontend of 1 Service (objects from /objects)',
      },
    ]);
  });

  it('a missing frontend, different backends and a stale frontend fail per Service', () => {
    const f: LbFacts = {
      origin: '/objects',
      model: [
        fe('10.96.0.1:80/TCP', 'a/web', ['10.1.0.1:8080']),
        fe('10.96.0.1:443/TCP', 'a/web', []),
        fe('10.96.0.2:53/UDP', 'kube-system/dns', ['10.1.0.9:53', '10.1.0.8:53'], { affinityTimeoutSec: 60 }),
      ],
      pinned: [
        listed('10.96.0.2:53/UDP', ['10.1.0.8:53']),
        listed('10.96.0.1:443/TCP', []),
        listed('10.96.0.9:80/TCP', ['10.1.0.4:80']),
      ],
    };
    const r = judgeLb(f);
    expect(r.map((x) => x.message)).toEqual([
      'Service a/web: 10.96.0.1:80/TCP is missing from sl_lb_svc',
      'Service kube-system/dns: 10.96.0.2:53/UDP: backends [10.1.0.8:53] pinned, [10.1.0.8:53, 10.1.0.9:53] in the model; 10.96.0.2:53/UDP: ClientIP affinity 0s pinned, 60s in the model',
      '10.96.0.9:80/TCP is in sl_lb_svc (backends 10.1.0.4:80) but no Service has it now: connections to it are still load-balanced',
    ]);
    expect(statuses(r)).toEqual(['fail', 'fail', 'fail']);
  });

  it('backend order does not matter; scope and the no-local flag do', () => {
    expect(frontendDifferences(listed('x', ['b', 'a']), listed('x', ['a', 'b']))).toEqual([]);
    expect(frontendDifferences(listed('x', [], { scope: 'externalIP', noLocalEndpoints: true }), listed('x', []))).toEqual([
      'scope clusterIP pinned, externalIP in the model',
      '"no endpoint on this node" false pinned, true in the model',
    ]);
  });

  it('a nodePort frontend is compared as the nodePort the maps flag it as, LoadBalancer IPs as external', () => {
    const f: LbFacts = {
      origin: '/objects',
      model: [
        fe('0.0.0.0:30080/TCP', 'a/web', ['10.1.0.1:8080'], { scope: 'nodePort' }),
        fe('192.0.2.10:80/TCP', 'a/web', ['10.1.0.1:8080'], { scope: 'loadBalancerIP' }),
      ],
      pinned: [
        listed('0.0.0.0:30080/TCP', ['10.1.0.1:8080'], { scope: 'nodePort' }),
        listed('192.0.2.10:80/TCP', ['10.1.0.1:8080'], { scope: 'externalIP' }),
      ],
    };
    expect(statuses(judgeLb(f))).toEqual(['ok']);
    const wrong: LbFacts = { ...f, pinned: [listed('0.0.0.0:30080/TCP', ['10.1.0.1:8080']), f.pinned![1]] };
    expect(judgeLb(wrong).map((x) => x.message)).toEqual([
      'Service a/web: 0.0.0.0:30080/TCP: scope clusterIP pinned, nodePort in the model',
    ]);
  });

  it('a manifest that does not parse turns differences into warnings (the agent keeps its last objects)', () => {
    const f: LbFacts = {
      origin: '/o',
      model: [],
      modelCaveat: '/o/svc.yaml did not parse',
      pinned: [listed('10.96.0.9:80/TCP', [])],
    };
    expect(judgeLb(f)).toEqual([
      expect.objectContaining({
        status: 'warn',
        message:
          '10.96.0.9:80/TCP is in sl_lb_svc (backends none) but no Service has it now: connections to it are still load-balanced (the model may be incomplete: /o/svc.yaml did not parse)',
      }),
    ]);
  });

  it('no objects: a warning, not a verdict; unreadable maps: a fail', () => {
    expect(judgeLb({ origin: '', modelError: 'the API server is not reachable (x)', pinned: [] })[0]).toMatchObject({
      status: 'warn',
    });
    expect(judgeLb({ origin: '', pinnedError: 'ENOENT' })[0]).toMatchObject({
      status: 'fail',
      message: 'cannot read the pinned socket-LB maps: ENOENT',
    });
  });
});

describe('doctor map pressure', () => {
  it('warns above 90%, fails a full map that refuses entries, warns a full LRU map', () => {
    const r = judgeMapPressure({
      maps: [
        { name: 'sl_lb_svc', type: 1, maxEntries: 100, entries: 95 },
        { name: 'sl_pod_ips', type: 1, maxEntries: 100, entries: 100 },
        { name: 'sl_bypass_flows', type: 9, maxEntries: 100, entries: 100 },
        { name: 'sl_lb_backend', type: 1, maxEntries: 100, entries: 90 },
        // kept for a switch to or from v0.1.0 only: evicting from it costs this release nothing
        { name: 'sl_origdst', type: 9, maxEntries: 100, entries: 100 },
      ],
      errors: [],
    });
    expect(r.map((x) => [x.status, x.message])).toEqual([
      ['warn', 'sl_lb_svc is 95.0% full (95/100)'],
      ['fail', 'sl_pod_ips is 100.0% full (100/100): new entries are refused'],
      ['warn', 'sl_bypass_flows is 100.0% full (100/100): the oldest entries are being evicted'],
    ]);
    expect(r[0].fix).toMatch(/^raise bpf-lb-service-map-max/);
    expect(r[1].fix).toMatch(/fixed in bpf\/lib/);
  });

  it('below the threshold: one ok line naming the fullest map', () => {
    expect(
      judgeMapPressure({
        maps: [
          { name: 'a', type: 1, maxEntries: 10, entries: 1 },
          { name: 'b', type: 18, maxEntries: 10, entries: 5 },
        ],
        errors: [],
      }),
    ).toEqual([{ check: 'maps.pressure', status: 'ok', message: 'every map below 90.0%; highest b 50.0% (5/10)' }]);
  });
});

describe('doctor CNI checks', () => {
  const primary = { cniVersion: '1.0.0', name: 'podnet', plugins: [{ type: 'bridge' }] };
  const withSluice = { ...primary, plugins: [{ type: 'bridge' }, { type: 'sluice-cni', agentSocket: '/run/s.sock' }] };
  const facts = (files: Array<{ name: string; text: string }>, extra: Partial<CniFacts> = {}): CniFacts => ({
    confDir: '/etc/cni/net.d',
    managed: true,
    agentSocket: '/run/s.sock',
    files,
    installedBinary: { path: '/opt/cni/bin/sluice-cni', sha256: 'ab'.repeat(32) },
    agentBinary: { path: '/opt/sluice/bin/sluice-cni', sha256: 'ab'.repeat(32) },
    ...extra,
  });
  const file = (name: string, v: unknown) => ({ name, text: JSON.stringify(v) });

  it('the runtime loads the first loadable file by name, skipping broken ones', () => {
    expect(
      runtimeConfig([file('20-b.conflist', primary), { name: '10-a.conflist', text: '{' }, file('15-c.conflist', primary)])?.name,
    ).toBe('15-c.conflist');
  });

  it('sluice last in the loaded file and the same binary: ok', () => {
    const r = judgeCni(facts([file('10-podnet.conflist', withSluice)]));
    expect(r.map((x) => [x.check, x.status, x.message])).toEqual([
      [
        'cni.chain',
        'ok',
        'the runtime loads /etc/cni/net.d/10-podnet.conflist: bridge → sluice-cni (sluice-cni last, agent /run/s.sock)',
      ],
      ['cni.binary', 'ok', `/opt/cni/bin/sluice-cni is this sluice's build (sha256 ${'ab'.repeat(6)}…)`],
    ]);
  });

  it('no sluice entry, not last, another agent socket, a file before it: each fails', () => {
    const m = (files: Array<{ name: string; text: string }>) =>
      judgeCni(facts(files))
        .filter((x) => x.status !== 'ok')
        .map((x) => x.message);
    expect(m([file('10-podnet.conflist', primary)])).toEqual([
      '/etc/cni/net.d/10-podnet.conflist (the file the runtime loads) has no sluice-cni entry (plugins: bridge): new pods start uncaptured',
    ]);
    expect(m([file('10-podnet.conflist', { ...primary, plugins: [withSluice.plugins[1], { type: 'bridge' }] })])).toEqual([
      'sluice-cni is not the last plugin in /etc/cni/net.d/10-podnet.conflist (plugins: sluice-cni, bridge): plugins after it change the pod unseen',
    ]);
    expect(
      m([file('10-podnet.conflist', { ...primary, plugins: [{ type: 'bridge' }, { type: 'sluice-cni', agentSocket: '/x' }] })]),
    ).toEqual([
      'sluice-cni in /etc/cni/net.d/10-podnet.conflist calls the agent at /x, the agent listens at /run/s.sock (agent-socket)',
    ]);
    expect(
      m([file('10-podnet.conflist', withSluice), file('05-other.conf', { cniVersion: '1.0.0', name: 'o', type: 'ptp' })]),
    ).toEqual([
      '/etc/cni/net.d/05-other.conf (the file the runtime loads) is a single-plugin config: sluice-cni is not in the chain, new pods start uncaptured',
    ]);
  });

  it('cni-conf-file-name naming a file the runtime does not load fails; a different binary fails', () => {
    const r = judgeCni(
      facts([file('05-a.conflist', withSluice), file('10-b.conflist', withSluice)], {
        confFileName: '10-b.conflist',
        installedBinary: { path: '/opt/cni/bin/sluice-cni', sha256: 'cd'.repeat(32) },
      }),
    );
    expect(r.filter((x) => x.status === 'fail').map((x) => x.message)).toEqual([
      'the runtime loads /etc/cni/net.d/05-a.conflist, but cni-conf-file-name is 10-b.conflist: sluice is chained into a file the runtime does not read',
      `/opt/cni/bin/sluice-cni is not this sluice's build (sha256 ${'cd'.repeat(6)}…, this sluice's ${'ab'.repeat(6)}…): another version answers the runtime`,
    ]);
    expect(judgeCni(facts([], { managed: false }))).toEqual([
      {
        check: 'cni.chain',
        status: 'ok',
        message: 'cni-conf-dir is empty: the agent does not manage the CNI chain (not checked)',
      },
    ]);
  });
});

describe('doctor pod checks', () => {
  const sidecar = sidecarPolicy({}, ['10.1.0.5']).policy!;
  const ambient: Policy = { ...sidecar, mode: 'ambient', flags: 0, includeCidrs: [], includeInPorts: [] };
  const registration = (name: string, over: Partial<PodRegistration> = {}): PodRegistration => ({
    containerId: `c-${name}`,
    ifName: 'eth0',
    namespace: 'shop',
    name,
    uid: `uid-${name}`,
    ips: ['10.1.0.5'],
    netnsCookie: '42',
    netnsPath: `/run/netns/${name}`,
    network: 'podnet',
    createdAt: '',
    ...over,
  });
  const attached = (type: number, target: bigint) => ({ pin: '/p/l', pinned: true, desc: { type, progId: 1, target } });
  const pod = (name: string, policy: Policy | undefined, over: Partial<PodFacts> = {}): PodFacts => ({
    reg: registration(name),
    netnsAlive: true,
    netnsIno: 9,
    intended: policy
      ? { mode: policy.mode as 'sidecar', rule: 'r', policy, from: 'agent' }
      : { mode: 'none', rule: 'r', from: 'agent' },
    kernel: policy,
    skLookup: attached(5, 9n),
    tcx: policy?.mode === 'ambient' ? attached(11, 1n) : undefined,
    zds: policy?.mode === 'ambient' ? { state: 'acked', attempts: 1, since: '' } : undefined,
    listening: [15001, 15006, 15008],
    datapathListeners: [15001, 15006, 15008],
    istio: [],
    istioErrors: [],
    ...over,
  });
  const facts = (pods: PodFacts[], over: Partial<PodsFacts> = {}): PodsFacts => ({
    stateDir: '/s',
    pods,
    unregistered: [],
    zdsConfigured: true,
    zdsStateKnown: true,
    ztunnelsConnected: 1,
    agentUp: true,
    now: Date.parse('2026-01-01T00:01:00Z'),
    ...over,
  });
  const bad = (r: CheckResult[]) => r.filter((x) => x.status !== 'ok').map((x) => [x.check, x.status, x.message]);

  it('healthy pods: an ok line per concern', () => {
    const r = judgePods(facts([pod('a', sidecar), pod('b', ambient), pod('c', undefined)]));
    expect(r.map((x) => [x.check, x.status])).toEqual([
      ['pods.mode', 'ok'],
      ['pods.links', 'ok'],
      ['pods.ztunnel', 'ok'],
      ['pods.proxy', 'ok'],
      ['pods.iptables', 'ok'],
    ]);
    expect(r[0].message).toBe('3 registered pods: the kernel holds the intended mode of each (sidecar 1, ambient 1, none 1)');
  });

  it('the kernel holding another mode or another policy fails', () => {
    const other = sidecarPolicy({ 'traffic.sidecar.istio.io/excludeInboundPorts': '9090' }, ['10.1.0.5']).policy!;
    const r = judgePods(facts([pod('a', sidecar, { kernel: undefined }), pod('b', sidecar, { kernel: other })]));
    expect(bad(r)).toEqual([
      [
        'pods.mode',
        'fail',
        'shop/a: intended mode=sidecar (r), the kernel holds nothing (no sl_endpoints entry for netns cookie 42)',
      ],
      [
        'pods.mode',
        'fail',
        expect.stringMatching(/^shop\/b: mode=sidecar as intended, but the kernel's policy \[.*9090.*\] is not the intended \[/),
      ],
    ]);
  });

  it('ztunnel: a nack and a long pending fail, a fresh pending warns, no ztunnel connected fails', () => {
    const r = judgePods(
      facts(
        [
          pod('n', ambient, {
            zds: { state: 'nack', error: 'failure to start proxy', attempts: 3, since: '2026-01-01T00:00:59Z' },
          }),
          pod('old', ambient, {
            zds: {
              state: 'pending',
              attempts: 1,
              since: new Date(Date.parse('2026-01-01T00:01:00Z') - ZDS_PENDING_FAIL_MS - 1000).toISOString(),
            },
          }),
          pod('new', ambient, { zds: { state: 'pending', attempts: 1, since: '2026-01-01T00:00:58Z' } }),
          pod('never', ambient, { zds: undefined }),
        ],
        { ztunnelsConnected: 0 },
      ),
    );
    expect(bad(r).filter((x) => x[0] === 'pods.ztunnel')).toEqual([
      ['pods.ztunnel', 'fail', "no ztunnel is connected to the agent's ZDS socket: 4 ambient pods fail closed"],
      ['pods.ztunnel', 'fail', 'shop/n: ztunnel refused it: failure to start proxy (attempt 3)'],
      ['pods.ztunnel', 'fail', 'shop/old: not acked by ztunnel for 11 s: its traffic fails closed'],
      ['pods.ztunnel', 'warn', 'shop/new: hand-off to ztunnel in progress (pending for 2 s)'],
      ['pods.ztunnel', 'fail', 'shop/never: never handed to ztunnel (no ZDS state for uid uid-never)'],
    ]);
  });

  it('a proxy not listening, or listening unseen by the datapath, fails; links detached fail', () => {
    const r = judgePods(
      facts([
        pod('a', sidecar, { listening: [15001] }),
        pod('b', ambient, { datapathListeners: [15001] }),
        pod('c', ambient, { skLookup: attached(5, 0n), tcx: { pin: '/p/tcx', pinned: false } }),
      ]),
    );
    expect(bad(r)).toEqual([
      ['pods.links', 'fail', 'shop/c (ambient): the sk_lookup link at /p/l is detached: inbound capture is off'],
      [
        'pods.links',
        'fail',
        "shop/c (ambient): no tcx link pinned at /p/tcx: the app's replies to ztunnel's source-preserving connections are not routed back",
      ],
      [
        'pods.proxy',
        'fail',
        'shop/a (sidecar): nothing listens on 15006 in its network namespace: the sidecar is not running there, captured connections fail closed',
      ],
      [
        'pods.proxy',
        'fail',
        'shop/b (ambient): ztunnel listens on 15006, 15008 but sl_listeners does not hold it (opened before the pod was enrolled?): captured connections fail closed',
      ],
    ]);
  });

  it("Istio's rules in a captured pod fail; a registration whose netns is gone warns", () => {
    const r = judgePods(
      facts([
        pod('a', sidecar, { istio: [{ source: 'nft', table: 'ip nat', chains: ['ISTIO_INBOUND', 'ISTIO_OUTPUT'] }] }),
        pod('gone', undefined, { netnsAlive: false }),
      ]),
    );
    expect(bad(r)).toEqual([
      [
        'pods.netns',
        'warn',
        'shop/gone: its network namespace /run/netns/gone is gone or another (registration of netns cookie 42 is stale)',
      ],
      [
        'pods.iptables',
        'fail',
        "shop/a (sidecar): Istio's own capture rules are in its network namespace (nft table ip nat: ISTIO_INBOUND, ISTIO_OUTPUT): connections are redirected twice",
      ],
    ]);
  });

  it('unreadable capture maps fail only when pods are registered', () => {
    expect(judgePods(facts([pod('a', sidecar)], { mapsError: 'ENOENT' }))).toEqual([
      {
        check: 'pods.mode',
        status: 'fail',
        message: '1 pod registered, but the capture maps cannot be read: ENOENT',
        fix: 'start the agent: it creates and pins the maps',
      },
    ]);
    expect(statuses(judgePods(facts([], { mapsError: 'ENOENT' })))).toEqual(['ok']);
  });

  it('a policy in sl_endpoints for a namespace no registration names warns', () => {
    expect(judgePods(facts([], { unregistered: ['77', '78'] }))).toEqual([
      { check: 'pods.mode', status: 'ok', message: 'no pods registered by the CNI plugin (state-dir /s)' },
      expect.objectContaining({
        check: 'pods.unregistered',
        status: 'warn',
        message:
          'sl_endpoints captures 2 network namespaces no registered pod has (netns cookies 77, 78): left behind by a registration that is gone',
      }),
    ]);
  });

  it('the proxy ports a policy needs', () => {
    expect(requiredProxyPorts(sidecar)).toEqual([15001, 15006]);
    expect(requiredProxyPorts({ ...sidecar, flags: 0, includeCidrs: [], includeInPorts: [8080] })).toEqual([15006]);
    expect(requiredProxyPorts(ambient)).toEqual([15001, 15006, 15008]);
    expect(requiredProxyPorts({ ...ambient, flags: POL_NO_INBOUND })).toEqual([15001]);
  });

  it('reads listening ports from ss', () => {
    const ss = [
      'LISTEN 0      4096         0.0.0.0:15001      0.0.0.0:*',
      'LISTEN 0 128 [::]:15006 [::]:*',
      'LISTEN 0 128 127.0.0.1%lo:53 0.0.0.0:*',
      'LISTEN 0 511 *:15008 *:*',
      '',
    ].join('\n');
    expect(parseListeningPorts(ss)).toEqual([53, 15001, 15006, 15008]);
  });
});

describe("doctor: Istio's rules in a pod", () => {
  it("finds ISTIO_ chains in nft output (iptables-nft) and Istio's native nftables tables", () => {
    const nft = [
      'table ip nat {',
      '\tchain ISTIO_INBOUND {',
      '\t\ttcp dport 15008 counter packets 0 bytes 0 return',
      '\t}',
      '\tchain PREROUTING {',
      '\t\ttype nat hook prerouting priority dstnat; policy accept;',
      '\t}',
      '\tchain ISTIO_OUTPUT {',
      '\t}',
      '}',
      'table inet istio-ambient-nat {',
      '\tchain istio-output {',
      '\t}',
      '}',
      'table inet filter {',
      '\tchain input {',
      '\t}',
      '}',
    ].join('\n');
    expect(istioInNftRuleset(nft)).toEqual([
      { source: 'nft', table: 'ip nat', chains: ['ISTIO_INBOUND', 'ISTIO_OUTPUT'] },
      { source: 'nft', table: 'inet istio-ambient-nat', chains: ['istio-output'] },
    ]);
  });

  it('finds ISTIO_ chains in iptables-save output', () => {
    const save = [
      '# Generated by iptables-save',
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':ISTIO_INBOUND - [0:0]',
      ':ISTIO_REDIRECT - [0:0]',
      '-A PREROUTING -p tcp -j ISTIO_INBOUND',
      'COMMIT',
      '*filter',
      ':INPUT ACCEPT [0:0]',
      'COMMIT',
    ].join('\n');
    expect(istioInIptablesSave(save, 'iptables-legacy')).toEqual([
      { source: 'iptables-legacy', table: 'nat', chains: ['ISTIO_INBOUND', 'ISTIO_REDIRECT'] },
    ]);
    expect(istioInIptablesSave('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n', 'x')).toEqual([]);
  });
});

describe('doctor: the Cilium and Istio checklist', () => {
  const objects = (raw: RawObject[], pods: Pod[] = [], extra: Partial<ClusterObjects> = {}): ClusterObjects => ({
    source: 'standalone',
    origin: '/o',
    services: [],
    slices: [],
    pods,
    namespaces: [],
    nodes: [],
    raw,
    unreadable: [],
    skipped: [],
    ...extra,
  });
  const cm = (data: Record<string, string>): RawObject => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'cilium-config', namespace: 'kube-system' },
    data,
  });
  const meshedPod = (name: string, labels: Record<string, string>, namespace = 'shop'): Pod => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels, annotations: { 'sidecar.istio.io/status': '{}' } },
    spec: { containers: [{ name: 'app' }, { name: 'istio-proxy', args: ['proxy', 'sidecar'] }] },
    status: {},
  });
  const cnp = (name: string, selector: unknown, rules: unknown, namespace = 'shop'): RawObject => ({
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name, namespace },
    spec: { endpointSelector: selector, ingress: [{ toPorts: [{ ports: [{ port: '80' }], rules }] }] },
  });
  const pa = (namespace: string, mode: string, selector?: unknown): RawObject => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name: 'pa', namespace },
    spec: { ...(selector ? { selector } : {}), mtls: { mode } },
  });

  it("reads cilium-config with Cilium's defaults", () => {
    expect(ciliumConfig(cm({}))).toMatchObject({
      socketLb: false,
      hostnsOnly: false,
      overlay: true,
      kubeProxyReplacement: 'false',
    });
    expect(ciliumConfig(cm({ 'kube-proxy-replacement': 'true' }))).toMatchObject({ socketLb: true });
    expect(ciliumConfig(cm({ 'kube-proxy-replacement': 'true', 'bpf-lb-sock': 'false' }))).toMatchObject({ socketLb: false });
    expect(ciliumConfig(cm({ 'routing-mode': 'native' }))).toMatchObject({ overlay: false });
    expect(ciliumConfig(cm({ tunnel: 'disabled' }))).toMatchObject({ overlay: false, routing: 'tunnel=disabled' });
  });

  it('nothing visible: one ok line', () => {
    expect(judgeCompat(cfg, objects([]))).toEqual([expect.objectContaining({ check: 'compat.visible', status: 'ok' })]);
  });

  it("Cilium's socket-LB in pods fails; hostns-only or socket-LB off is fine; cni-exclusive true warns", () => {
    const r = judgeCompat(cfg, objects([cm({ 'kube-proxy-replacement': 'true', 'cni-exclusive': 'true' })]));
    expect(r.map((x) => [x.check, x.status])).toEqual([
      ['compat.cilium_socket_lb', 'fail'],
      ['compat.cilium_cni_exclusive', 'warn'],
    ]);
    expect(r[0].fix).toContain('bpf-lb-sock-hostns-only: "true"');
    const fine = judgeCompat(
      cfg,
      objects([cm({ 'kube-proxy-replacement': 'true', 'bpf-lb-sock-hostns-only': 'true', 'cni-exclusive': 'false' })]),
    );
    expect(statuses(fine)).toEqual(['ok', 'ok']);
  });

  it('L7 rules on a meshed pod with mTLS on fail (split brain); mTLS DISABLE, DNS rules or unselected pods do not', () => {
    const pods = [meshedPod('web', { app: 'web' }), meshedPod('db', { app: 'db' })];
    const http = { http: [{ method: 'GET' }] };
    const r = judgeCompat(
      cfg,
      objects([cnp('l7', { matchLabels: { 'k8s:app': 'web' } }, http), cnp('dns', {}, { dns: [{ matchPattern: '*' }] })], pods),
    );
    expect(r.filter((x) => x.check === 'compat.l7_split_brain').map((x) => [x.status, x.message])).toEqual([
      [
        'fail',
        "CiliumNetworkPolicy shop/l7 has HTTP rules for shop/web (sidecar, Istio mTLS PERMISSIVE): Cilium's L7 proxy sees Istio's encrypted bytes and cannot apply the rules (split brain)",
      ],
    ]);
    const disabled = judgeCompat(
      cfg,
      objects([cnp('l7', { matchLabels: { app: 'web' } }, http), pa('shop', 'DISABLE', { matchLabels: { app: 'web' } })], pods),
    );
    expect(disabled.find((x) => x.check === 'compat.l7_split_brain')).toMatchObject({ status: 'ok' });
  });

  it('mTLS mode: workload, then namespace, then mesh-wide, UNSET inherits, PERMISSIVE by default', () => {
    const p = meshedPod('web', { app: 'web' });
    expect(mtlsMode(p, [])).toBe('PERMISSIVE');
    expect(mtlsMode(p, [pa('istio-system', 'STRICT')])).toBe('STRICT');
    expect(mtlsMode(p, [pa('istio-system', 'STRICT'), pa('shop', 'DISABLE')])).toBe('DISABLE');
    expect(mtlsMode(p, [pa('shop', 'DISABLE'), pa('shop', 'UNSET', { matchLabels: { app: 'web' } })])).toBe('DISABLE');
    expect(mtlsMode(p, [pa('shop', 'DISABLE'), pa('shop', 'STRICT', { matchLabels: { app: 'web' } })])).toBe('STRICT');
    expect(mtlsMode(p, [pa('shop', 'DISABLE', { matchLabels: { app: 'other' } })])).toBe('PERMISSIVE');
  });

  it('label selectors: matchLabels and every matchExpressions operator', () => {
    const l = { app: 'web', tier: 'front' };
    expect(selects({}, l)).toBe(true);
    expect(
      selects(
        {
          matchExpressions: [
            { key: 'app', operator: 'In', values: ['web', 'x'] },
            { key: 'gone', operator: 'DoesNotExist' },
          ],
        },
        l,
      ),
    ).toBe(true);
    expect(selects({ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['front'] }] }, l)).toBe(false);
    expect(selects({ matchExpressions: [{ key: 'x', operator: 'Exists' }] }, l)).toBe(false);
  });

  it('istiod off hostNetwork under an overlay with injection warns; native routing or hostNetwork is fine', () => {
    const istiod = (hostNetwork?: boolean): RawObject => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'istiod', namespace: 'istio-system' },
      spec: { template: { spec: hostNetwork ? { hostNetwork } : {} } },
    });
    const pods = [meshedPod('web', {})];
    const find = (r: CheckResult[]) => r.find((x) => x.check === 'compat.istiod_host_network');
    expect(find(judgeCompat(cfg, objects([cm({}), istiod()], pods)))).toMatchObject({
      status: 'warn',
      message: expect.stringContaining('routing-mode unset (tunnel)'),
    });
    expect(find(judgeCompat(cfg, objects([cm({ 'routing-mode': 'native' }), istiod()], pods)))).toMatchObject({ status: 'ok' });
    expect(find(judgeCompat(cfg, objects([cm({}), istiod(true)], pods)))).toMatchObject({
      status: 'ok',
      message: 'istiod runs on hostNetwork',
    });
    expect(find(judgeCompat(cfg, objects([cm({}), istiod()], [])))).toMatchObject({
      status: 'ok',
      message: 'no sidecar injection in use',
    });
  });

  it('istio-cni beside sluice warns (double capture); refused reads warn', () => {
    const r = judgeCompat(
      cfg,
      objects(
        [{ apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'istio-cni-node', namespace: 'istio-system' } }],
        [],
        {
          unreadable: [{ what: 'PeerAuthentications', error: '403 forbidden' }],
        },
      ),
    );
    expect(r.map((x) => [x.check, x.status])).toEqual([
      ['compat.visible', 'warn'],
      ['compat.istio_cni', 'warn'],
    ]);
  });
});

describe('doctor cluster checks', () => {
  const api = (raw: RawObject[], extra: Partial<ClusterObjects> = {}): ClusterObjects => ({
    source: 'api',
    origin: 'https://10.0.0.1:6443',
    services: [],
    slices: [],
    pods: [],
    namespaces: [],
    nodes: [],
    raw,
    unreadable: [],
    skipped: [],
    api: { reachable: true, version: 'v1.32.0' },
    ...extra,
  });
  const apiCfg = parseConfig({ 'k8s-kubeconfig': '/kc', 'cgroup-root': '/sys/fs/cgroup' });

  it("no kube-proxy and no k8s-api-server fails; kube-proxy, the setting or Cilium's replacement make it ok", () => {
    const by = (r: CheckResult[]) => r.find((x) => x.check === 'cluster.kube_proxy')!;
    expect(by(judgeCluster(apiCfg, api([])))).toMatchObject({ status: 'fail', fix: expect.stringContaining('k8s-api-server') });
    expect(
      by(judgeCluster(apiCfg, api([{ kind: 'DaemonSet', metadata: { name: 'kube-proxy', namespace: 'kube-system' } }]))),
    ).toMatchObject({ status: 'ok' });
    expect(
      by(
        judgeCluster(
          apiCfg,
          api([
            { kind: 'Pod', metadata: { name: 'kube-proxy-x', namespace: 'kube-system', labels: { 'k8s-app': 'kube-proxy' } } },
          ]),
        ),
      ),
    ).toMatchObject({ status: 'ok' });
    expect(
      by(judgeCluster(parseConfig({ 'k8s-api-server': 'https://10.0.0.1:6443', 'cgroup-root': '/sys/fs/cgroup' }), api([]))),
    ).toMatchObject({ status: 'ok' });
    expect(
      by(
        judgeCluster(
          apiCfg,
          api([
            {
              kind: 'ConfigMap',
              metadata: { name: 'cilium-config', namespace: 'kube-system' },
              data: { 'kube-proxy-replacement': 'true' },
            },
          ]),
        ),
      ),
    ).toMatchObject({ status: 'ok' });
    expect(
      by(
        judgeCluster(
          apiCfg,
          api([], {
            unreadable: [
              { what: 'DaemonSet kube-system/kube-proxy', error: '403' },
              { what: 'kube-proxy Pods', error: '403' },
            ],
          }),
        ),
      ),
    ).toMatchObject({ status: 'warn' });
  });

  it('an unreachable API server fails; standalone mode counts the objects', () => {
    expect(judgeCluster(apiCfg, api([], { api: { reachable: false, error: 'ECONNREFUSED' } }))).toEqual([
      expect.objectContaining({
        check: 'cluster.source',
        status: 'fail',
        message: 'API server https://10.0.0.1:6443 unreachable: ECONNREFUSED; the datapath keeps its last state',
      }),
    ]);
    const standalone: ClusterObjects = {
      ...api([]),
      source: 'standalone',
      origin: '/o',
      api: undefined,
      unreadable: [{ what: '/o/bad.yaml', error: 'bad indentation' }],
      skipped: [{ what: '/o/svc.yaml', error: 'Cannot parse Service: spec.ports[0].port 0 out of range' }],
    };
    expect(judgeCluster(cfg, standalone).map((x) => [x.status, x.message])).toEqual([
      ['ok', 'standalone mode: 0 objects from /o (no API server involved)'],
      ['warn', '/o/bad.yaml does not parse (bad indentation): the agent serves what it last read from it'],
      [
        'warn',
        '/o/svc.yaml: a malformed object, skipped by the agent too: Cannot parse Service: spec.ports[0].port 0 out of range',
      ],
    ]);
  });
});
