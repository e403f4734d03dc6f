/* The TypeScript codecs mirror bpf/lib/shared.h: sizes checked against the BTF of the built
 * object, counters against the C enum.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  affinityKeyCodec, affinityValCodec, backendCodec, COUNTERS, deadKeyCodec, decodeAddr, destroyedCodec, encodeAddr, origdstStatCodec,
  SOCK_REV_ENTRY_SIZE, svcKeyCodec, svcValCodec,
} from '../../src/bpf/layout';

const ROOT = path.resolve(__dirname, '../..');
const OBJ = path.join(ROOT, 'build/bpf/sock_lb.o');

function btfStructSizes(obj = OBJ): Record<string, number> {
  const out = execFileSync('bpftool', ['btf', 'dump', 'file', obj], { encoding: 'utf8' });
  const sizes: Record<string, number> = {};
  for (const m of out.matchAll(/STRUCT '(\w+)' size=(\d+)/g)) sizes[m[1]] = Number(m[2]);
  return sizes;
}

describe('map layouts', () => {
  it('codec sizes equal the C struct sizes in the object BTF', () => {
    const sizes = btfStructSizes();
    expect(sizes.sl_svc_key).toBe(svcKeyCodec.size);
    expect(sizes.sl_svc_val).toBe(svcValCodec.size);
    expect(sizes.sl_backend).toBe(backendCodec.size);
    expect(sizes.sl_affinity_key).toBe(affinityKeyCodec.size);
    expect(sizes.sl_affinity_val).toBe(affinityValCodec.size);
    expect(sizes.sl_origdst_stat).toBe(origdstStatCodec.size);
  });

  // that it is still v0.1.0's layout (socket storage cannot be migrated) is checked by the
  // upgrade test: sl_lb_sock_rev is reused as it is
  it('the reverse-translation record matches its size in the codecs module', () => {
    expect(btfStructSizes().sl_sock_rev_entry).toBe(SOCK_REV_ENTRY_SIZE);
  });

  it('the socket-destroy records and keys match bpf/sock_destroy.o, which shares the reverse-translation layout', () => {
    const sizes = btfStructSizes(path.join(ROOT, 'build/bpf/sock_destroy.o'));
    expect(sizes.sl_dead_key).toBe(deadKeyCodec.size);
    const header = fs.readFileSync(path.join(ROOT, 'bpf/lib/shared.h'), 'utf8');
    expect(Number(/sizeof\(struct sl_destroyed\) == (\d+)/.exec(header)?.[1])).toBe(destroyedCodec.size);
    expect(sizes.sl_sock_rev_entry).toBe(SOCK_REV_ENTRY_SIZE);
  });

  it('the counter list matches enum sl_counter', () => {
    const header = fs.readFileSync(path.join(ROOT, 'bpf/lib/shared.h'), 'utf8');
    const entries = [...header.matchAll(/SL_CNT_(\w+)\s*=\s*(\d+)/g)].filter((m) => m[1] !== 'MAX');
    expect(entries.map((m) => [m[1].toLowerCase(), Number(m[2])])).toEqual(COUNTERS.map((n, i) => [n, i]));
    expect(header).toMatch(new RegExp(`SL_CNT_MAX\\s*=\\s*${COUNTERS.length}\\b`));
  });

  it('addresses round-trip, IPv4 as IPv4-mapped IPv6', () => {
    const buf = Buffer.alloc(16);
    encodeAddr('10.96.0.10', buf, 0);
    expect(buf.toString('hex')).toBe('00000000000000000000ffff0a60000a');
    expect(decodeAddr(buf, 0)).toBe('10.96.0.10');
    for (const ip of ['fd00::1', '2001:db8:0:1::abcd', '::1', 'fe80::1:2:3:4']) {
      encodeAddr(ip, buf, 0);
      expect(decodeAddr(buf, 0)).toBe(ip);
    }
    encodeAddr('FD00:0:0::0001', buf, 0);
    expect(buf.toString('hex')).toBe('fd000000000000000000000000000001');
    expect(() => encodeAddr('10.1.2', buf, 0)).toThrow(TypeError);
  });

  it('service keys encode ports in host order at the C offsets', () => {
    const buf = Buffer.alloc(svcKeyCodec.size);
    svcKeyCodec.encode({ vip: '10.0.0.1', port: 8080, proto: 17, slot: 3 }, buf, 0);
    expect(buf.readUInt16LE(16)).toBe(8080);
    expect(buf[18]).toBe(17);
    expect(buf.readUInt16LE(20)).toBe(3);
    expect(svcKeyCodec.decode(buf, 0)).toEqual({ vip: '10.0.0.1', port: 8080, proto: 17, slot: 3 });
  });
});

describe('encodeAddr', () => {
  it('encodes IPv4 as net.isIP accepts it, and refuses what it refuses', () => {
    const buf = Buffer.alloc(16);
    for (const ip of ['0.0.0.0', '10.96.0.10', '255.255.255.255', '1.2.3.4']) {
      encodeAddr(ip, buf, 0);
      expect(decodeAddr(buf, 0)).toBe(ip);
    }
    for (const bad of ['10.96.0', '10.96.0.1.2', '10.096.0.1', '256.1.1.1', '10..0.1', '10.0.0.1 ', '', '1.2.3.04']) {
      expect(() => encodeAddr(bad, buf, 0), bad).toThrow(TypeError);
    }
  });
});
