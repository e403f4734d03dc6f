/* Field-by-field conversion plans between two BTF layouts of a map's key or value, and the
 * compatibility rule between a pinned map and the one a new object wants.
 */
import { describe, expect, test } from 'vitest';
import { applyPlan, planConversion, UnconvertibleLayout } from '../../src/bpf/convert';
import { flatten, incompatibility, layoutId, MAP_TYPE, type MapSpec, type TypeLayout } from '../../src/bpf/map-spec';

const u8: TypeLayout = { k: 'int', size: 1, signed: false, bits: 8 };
const u16: TypeLayout = { k: 'int', size: 2, signed: false, bits: 16 };
const u32: TypeLayout = { k: 'int', size: 4, signed: false, bits: 32 };
const s16: TypeLayout = { k: 'int', size: 2, signed: true, bits: 16 };
const u64: TypeLayout = { k: 'int', size: 8, signed: false, bits: 64 };

/** A struct from [name, type] members laid out in order with natural alignment. */
function struct(...members: Array<[string, TypeLayout]>): TypeLayout {
  let off = 0;
  let align = 1;
  const m = members.map(([name, t]) => {
    const size = sizeOf(t);
    const a = alignOf(t);
    align = Math.max(align, a);
    off = Math.ceil(off / a) * a;
    const member = { name, off: off * 8, bits: 0, t };
    off += size;
    return member;
  });
  return { k: 'struct', size: Math.ceil(off / align) * align, m };
}

function sizeOf(t: TypeLayout): number {
  if (t.k === 'array') return t.n * sizeOf(t.of);
  return 'size' in t ? t.size : 8;
}

function alignOf(t: TypeLayout): number {
  if (t.k === 'array') return alignOf(t.of);
  if (t.k === 'struct' || t.k === 'union') return Math.max(...t.m.map((m) => alignOf(m.t)));
  return 'size' in t ? t.size : 8;
}

function convert(oldT: TypeLayout, newT: TypeLayout, bytes: number[]): number[] {
  const plan = planConversion(oldT, sizeOf(oldT), newT, sizeOf(newT));
  const out = Buffer.alloc(plan.size, 0xee);
  applyPlan(plan, Buffer.from(bytes), 0, out, 0);
  return [...out];
}

describe('conversion plans', () => {
  const svcVal = struct(['id', u32], ['count', u16], ['flags', u16], ['affinity_s', u32]);

  test('the same layout is copied as it is', () => {
    const plan = planConversion(svcVal, 12, svcVal, 12);
    expect(plan).toMatchObject({ verbatim: true, ops: [{ from: 0, to: 0, len: 12 }], added: [], dropped: [] });
  });

  test('a field added at the end starts at zero, the others keep their bytes', () => {
    const withWeight = struct(['id', u32], ['count', u16], ['flags', u16], ['affinity_s', u32], ['weight', u32]);
    const plan = planConversion(svcVal, 12, withWeight, 16);
    expect(plan).toMatchObject({ verbatim: false, added: ['weight'], dropped: [], ops: [{ from: 0, to: 0, len: 12 }] });
    expect(convert(svcVal, withWeight, [1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0, 0])).toEqual([
      1, 0, 0, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  test('moved fields are copied to their new offsets; padding that becomes a field is not "dropped"', () => {
    const oldAff = struct(['last_ns', u64], ['backend_id', u32], ['pad', u32]);
    const newAff = struct(['backend_id', u32], ['hits', u32], ['last_ns', u64]);
    const plan = planConversion(oldAff, 16, newAff, 16);
    expect(plan.added).toEqual(['hits']);
    expect(plan.dropped).toEqual([]);
    const last = [1, 2, 3, 4, 5, 6, 7, 8];
    expect(convert(oldAff, newAff, [...last, 9, 0, 0, 0, 0xaa, 0xaa, 0xaa, 0xaa])).toEqual([9, 0, 0, 0, 0, 0, 0, 0, ...last]);
  });

  test('an unsigned integer widens (little-endian, upper bytes zero); a signed one does not', () => {
    const narrow = struct(['port', u16], ['proto', u8]);
    const wide = struct(['port', u32], ['proto', u8]);
    expect(convert(narrow, wide, [0x90, 0x1f, 6, 0])).toEqual([0x90, 0x1f, 0, 0, 6, 0, 0, 0]);
    const signed = struct(['port', s16], ['proto', u8]);
    expect(() => planConversion(signed, 4, wide, 8)).toThrow(UnconvertibleLayout);
    expect(() => planConversion(signed, 4, wide, 8)).toThrow('field port: a signed integer widened from 2 to 4 bytes');
  });

  test('narrowing, a changed signedness or kind is unconvertible, naming the field', () => {
    expect(() => planConversion(struct(['a', u32]), 4, struct(['a', u16]), 2)).toThrow('field a: narrowed from 4 to 2 bytes');
    expect(() => planConversion(struct(['count', u16]), 2, struct(['count', s16]), 2)).toThrow('field count: signedness changed');
    const nested = struct(['a', struct(['x', u16], ['y', u16])]);
    expect(() => planConversion(struct(['a', { k: 'array', n: 4, of: u8 }]), 4, nested, 4)).toThrow(
      'field a: int became a struct or an array of structs',
    );
    expect(() => planConversion(nested, 4, struct(['a', u32]), 4)).toThrow('field a: a struct or an array of structs became int');
  });

  test('arrays keep their first elements: a longer one zero-fills, a shorter one reports what it leaves', () => {
    const entry = struct(['backend', { k: 'array', n: 2, of: u8 }], ['port', u16]);
    const rev = (n: number) => struct(['used', u32], ['e', { k: 'array', n, of: entry }]);
    const grow = planConversion(rev(2), sizeOf(rev(2)), rev(3), sizeOf(rev(3)));
    expect(grow.added).toEqual(['e[2].backend', 'e[2].port']);
    expect(grow.dropped).toEqual([]);
    const shrink = planConversion(rev(3), sizeOf(rev(3)), rev(2), sizeOf(rev(2)));
    expect(shrink.dropped).toEqual(['e[2].backend', 'e[2].port']);
    const ports = (n: number) => struct(['ports', { k: 'array', n, of: u16 }]);
    expect(planConversion(ports(4), 8, ports(2), 4).dropped).toEqual(['ports[2..3]']);
    expect(convert(ports(2), ports(4), [1, 0, 2, 0])).toEqual([1, 0, 2, 0, 0, 0, 0, 0]);
  });

  test('a bitfield converts only when the layout is unchanged', () => {
    const bits: TypeLayout = {
      k: 'struct',
      size: 4,
      m: [
        { name: 'mode', off: 0, bits: 3, t: u32 },
        { name: 'flags', off: 3, bits: 5, t: u32 },
      ],
    };
    expect(planConversion(bits, 4, bits, 4).verbatim).toBe(true);
    const more: TypeLayout = {
      k: 'struct',
      size: 8,
      m: [...(bits as Extract<TypeLayout, { m: unknown }>).m, { name: 'extra', off: 32, bits: 0, t: u32 }],
    };
    expect(() => planConversion(bits, 4, more, 8)).toThrow(/bitfields/);
  });

  test('without BTF only a value of the same size converts (as it is)', () => {
    expect(planConversion(null, 8, null, 8).verbatim).toBe(true);
    expect(() => planConversion(null, 8, null, 16)).toThrow('no BTF to convert 8 bytes into 16 by field');
  });
});

describe('flattened layouts', () => {
  test('nested structs and arrays of structs become dotted paths, scalar arrays stay one field', () => {
    const addr = struct(['b', { k: 'array', n: 16, of: u8 }]);
    const policy = struct(['mode', u8], ['pod_ips', { k: 'array', n: 2, of: addr }], ['ports', { k: 'array', n: 3, of: u16 }]);
    expect(flatten(policy).map((l) => [l.path, l.off, l.elemSize, l.count])).toEqual([
      ['mode', 0, 1, 1],
      ['pod_ips[0].b', 1, 1, 16],
      ['pod_ips[1].b', 17, 1, 16],
      ['ports', 34, 2, 3],
    ]);
  });
});

describe('compatibility of a pinned map', () => {
  const value = struct(['id', u32], ['count', u16], ['flags', u16], ['affinity_s', u32]);
  const spec = (over: Partial<MapSpec> = {}): MapSpec => ({
    name: 'sl_lb_svc',
    type: MAP_TYPE.hash,
    keySize: 24,
    valueSize: 12,
    maxEntries: 262144,
    flags: 1,
    key: null,
    value,
    ...over,
  });

  test('the same spec is compatible', () => {
    expect(incompatibility(spec(), spec())).toBeUndefined();
  });

  test('every difference is named: sizes, flags, type, layout', () => {
    expect(incompatibility(spec(), spec({ maxEntries: 16 }))).toBe('max entries 262144 → 16');
    expect(incompatibility(spec(), spec({ type: MAP_TYPE.lru_hash, flags: 0 }))).toBe('type hash → lru_hash, flags 0x1 → 0x0');
    const renamed = struct(['id', u32], ['count', u16], ['bits', u16], ['affinity_s', u32]);
    expect(incompatibility(spec(), spec({ value: renamed }))).toBe('value layout');
  });

  test('a layout is compared only where both maps carry BTF', () => {
    expect(incompatibility(spec({ value: null }), spec())).toBeUndefined();
  });

  test('layout ids change with the layout and nothing else', () => {
    const id = layoutId(spec());
    expect(id).toMatch(/^[0-9a-f]{12}$/);
    expect(layoutId(spec({ maxEntries: 16, flags: 0 }))).toBe(id);
    expect(
      layoutId(
        spec({ value: struct(['id', u32], ['count', u16], ['flags', u16], ['affinity_s', u32], ['w', u32]), valueSize: 16 }),
      ),
    ).not.toBe(id);
  });
});
