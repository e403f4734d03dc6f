import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cgroup2Mount, formatListenAddress, loadConfig, loadConfigDir, parseConfig } from '../../src/config';

describe('config', () => {
  it('defaults match the documented values', () => {
    const c = parseConfig({ 'cgroup-root': '/sys/fs/cgroup' });
    expect(c).toMatchObject({
      bpfPinDir: '/sys/fs/bpf/sluice',
      agentSocket: '/var/run/sluice/agent.sock',
      lbSockHostnsOnly: false,
      lbSockTerminatePodConnections: false,
      // 100,000 Services with 5 endpoints each: 600,000 service entries, 500,000 backends
      lbServiceMapMax: 1048576,
      lbBackendMapMax: 524288,
      lbAffinityMapMax: 65536,
    });
  });

  it('bpf-lb-sock-terminate-pod-connections takes Cilium\'s spelling and "true"/"false" only', () => {
    expect(
      parseConfig({ 'cgroup-root': '/x', 'bpf-lb-sock-terminate-pod-connections': 'true' }).lbSockTerminatePodConnections,
    ).toBe(true);
    expect(() => parseConfig({ 'cgroup-root': '/x', 'bpf-lb-sock-terminate-pod-connections': 'on' })).toThrow(
      'Cannot parse config key bpf-lb-sock-terminate-pod-connections "on": expected "true" or "false"',
    );
  });

  it("monitor-ring-bytes is a power of two of at least one page (a BPF ring buffer's size)", () => {
    expect(parseConfig({ 'cgroup-root': '/x' }).monitorRingBytes).toBe(524288);
    expect(parseConfig({ 'cgroup-root': '/x', 'monitor-ring-bytes': '4096' }).monitorRingBytes).toBe(4096);
    for (const bad of ['2048', '12288', '0x1000', '2147483648']) {
      expect(() => parseConfig({ 'cgroup-root': '/x', 'monitor-ring-bytes': bad })).toThrow(
        `Cannot parse config key monitor-ring-bytes "${bad}": expected a power of two from 4096 (one page) to 1073741824 bytes`,
      );
    }
  });

  it('the cgroup2 mount is found from /proc/mounts', () => {
    const mounts = 'tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n';
    expect(cgroup2Mount(mounts)).toBe('/sys/fs/cgroup/unified');
    expect(() => cgroup2Mount('proc /proc proc rw 0 0\n')).toThrow(/cgroup-root/);
  });

  it('malformed values are rejected with the key and the value', () => {
    expect(() => parseConfig({ 'bpf-lb-sock-hostns-only': 'yes' })).toThrow(
      'Cannot parse config key bpf-lb-sock-hostns-only "yes"',
    );
    expect(() => parseConfig({ 'bpf-pin-dir': 'relative/dir' })).toThrow(/bpf-pin-dir "relative\/dir": not an absolute path/);
    expect(() => parseConfig({ 'bpf-lb-backend-map-max': '12x' })).toThrow(/bpf-lb-backend-map-max "12x"/);
    expect(() => parseConfig({ 'bpf-lb-backend-map-max': '4' })).toThrow(/from 16/);
    expect(() => parseConfig({ 'bpf-pin-dir': ['a'] })).toThrow(TypeError);
  });

  it('serve addresses are Go listen addresses: ":port" is every address, empty turns the endpoint off', () => {
    const base = { 'cgroup-root': '/x' };
    expect(parseConfig(base)).toMatchObject({
      prometheusServeAddr: undefined,
      healthServeAddr: { host: '127.0.0.1', port: 9968 },
    });
    expect(parseConfig({ ...base, 'prometheus-serve-addr': ':9967' }).prometheusServeAddr).toEqual({ host: '', port: 9967 });
    expect(parseConfig({ ...base, 'prometheus-serve-addr': '[::1]:0' }).prometheusServeAddr).toEqual({ host: '::1', port: 0 });
    expect(parseConfig({ ...base, 'prometheus-serve-addr': 'localhost:9967' }).prometheusServeAddr).toEqual({
      host: 'localhost',
      port: 9967,
    });
    expect(parseConfig({ ...base, 'health-serve-addr': '' }).healthServeAddr).toBeUndefined();
    expect(() => parseConfig({ ...base, 'prometheus-serve-addr': '9967' })).toThrow(
      'Cannot parse config key prometheus-serve-addr "9967": expected HOST:PORT',
    );
    expect(() => parseConfig({ ...base, 'health-serve-addr': '127.0.0.1:70000' })).toThrow(
      /health-serve-addr "127.0.0.1:70000": port 70000 is out of range/,
    );
    expect(() => parseConfig({ ...base, 'health-serve-addr': '[10.0.0.1]:80' })).toThrow(/"10.0.0.1" is not an IPv6 address/);
    expect(() => parseConfig({ ...base, 'health-serve-addr': '::1:80' })).toThrow(/expected HOST:PORT/);
    expect(() => parseConfig({ ...base, 'health-serve-addr': 'a_b:80' })).toThrow(
      /"a_b" is neither an IP address nor a host name/,
    );
    expect(formatListenAddress({ host: '::1', port: 9968 })).toBe('[::1]:9968');
    expect(formatListenAddress({ host: '', port: 9967 })).toBe(':9967');
  });

  it('unquoted YAML scalars are read as their strings', () => {
    const c = parseConfig({ 'bpf-lb-sock-hostns-only': true, 'bpf-lb-backend-map-max': 1024, 'cgroup-root': '/x' });
    expect(c.lbSockHostnsOnly).toBe(true);
    expect(c.lbBackendMapMax).toBe(1024);
  });

  it('a ConfigMap manifest is read through its data', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slcfg-'));
    try {
      const f = path.join(dir, 'cm.yaml');
      fs.writeFileSync(
        f,
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sluice}\ndata:\n  bpf-pin-dir: /sys/fs/bpf/x\n  cgroup-root: /c\n  not-a-key: "1"\n',
      );
      expect(loadConfig(f).bpfPinDir).toBe('/sys/fs/bpf/x');
      fs.writeFileSync(f, '- a list\n');
      expect(() => loadConfig(f)).toThrow(/expected a map of keys/);
      fs.writeFileSync(f, 'a: [\n');
      expect(() => loadConfig(f)).toThrow(SyntaxError);
      expect(() => loadConfig(path.join(dir, 'absent.yaml'))).toThrow(/Cannot read config file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('config directory', () => {
  it('a mounted ConfigMap (one file per key) is read, kubelet bookkeeping ignored', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slcfgd-'));
    try {
      fs.writeFileSync(path.join(dir, 'bpf-pin-dir'), '/sys/fs/bpf/y\n');
      fs.writeFileSync(path.join(dir, 'cgroup-root'), '/c');
      fs.writeFileSync(path.join(dir, 'bpf-lb-sock-hostns-only'), 'true');
      fs.mkdirSync(path.join(dir, '..2026_12_01'));
      fs.symlinkSync('..2026_12_01', path.join(dir, '..data'));
      const c = loadConfigDir(dir);
      expect(c).toMatchObject({ bpfPinDir: '/sys/fs/bpf/y', lbSockHostnsOnly: true });
      fs.writeFileSync(path.join(dir, 'cni-exclusive'), 'maybe');
      expect(() => loadConfigDir(dir)).toThrow('Cannot parse config key cni-exclusive "maybe"');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
