/* The codecs' encodings: addresses, ports in host order at the offsets of their field tables.
 * The tables themselves are checked against the objects' BTF by contract-layout.test.ts, the
 * counters and flags against the C headers by contract-constants.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { cidrCodec, decodeAddr, encodeAddr, listenerKeyCodec, svcKeyCodec } from '../../src/bpf/layout';

describe('map layouts', () => {
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

  it('listener keys encode the cookie, port, family and slot at the C offsets', () => {
    const buf = Buffer.alloc(listenerKeyCodec.size, 0xaa);
    listenerKeyCodec.encode({ netnsCookie: 0x1122334455667788n, port: 15006, family: 6, slot: 3 }, buf, 0);
    expect(buf.toString('hex')).toBe('8877665544332211' + '9e3a' + '06' + '03' + '00000000');
    expect(listenerKeyCodec.decode(buf, 0)).toEqual({ netnsCookie: 0x1122334455667788n, port: 15006, family: 6, slot: 3 });
  });

  it('CIDR prefixes are over 128 bits: IPv4 ones are stored plus 96', () => {
    const buf = Buffer.alloc(cidrCodec.size);
    cidrCodec.encode({ ip: '10.0.0.0', prefix: 8 }, buf, 0);
    expect(buf[16]).toBe(104);
    expect(cidrCodec.decode(buf, 0)).toEqual({ ip: '10.0.0.0', prefix: 8 });
    cidrCodec.encode({ ip: 'fd00::', prefix: 8 }, buf, 0);
    expect(buf[16]).toBe(8);
    expect(cidrCodec.decode(buf, 0)).toEqual({ ip: 'fd00::', prefix: 8 });
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
