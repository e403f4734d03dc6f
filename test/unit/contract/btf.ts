/* What an object file's BTF says of the structs and the .rodata settings it declares, read with
 * bpftool (`btf dump file X -j`), and the comparison of a struct with a codec's field table.
 * Pure comparisons, so that the contract tests can also feed them a mutated description.
 */
import { execFileSync } from 'node:child_process';
import type { StructLayout } from '../../../src/bpf/struct-layout';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number; bitfield_size?: number }>;
  vars?: Array<{ type_id: number; offset: number; size: number }>;
}

/** A member as BTF lays it out: byte offset, size in bytes; bitfield when it is one. */
export interface BtfMember {
  name: string;
  offset: number;
  size: number;
  bitfield?: boolean;
}

export interface BtfStruct {
  name: string;
  size: number;
  members: BtfMember[];
}

export interface BtfDescription {
  structs: Map<string, BtfStruct>;
  /** the variables of the DATASEC .rodata (the `const volatile` settings), with their sizes */
  rodata: Array<{ name: string; size: number }>;
}

function typeSize(types: Map<number, BtfType>, id: number, depth = 0): number {
  const t = types.get(id);
  if (!t || depth > 32) throw new Error(`BTF type ${id} cannot be sized`);
  switch (t.kind) {
    case 'INT':
    case 'STRUCT':
    case 'UNION':
    case 'ENUM':
    case 'ENUM64':
    case 'FLOAT':
      return t.size!;
    case 'PTR':
      return 8;
    case 'ARRAY':
      return t.nr_elems! * typeSize(types, t.type_id!, depth + 1);
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
    case 'RESTRICT':
    case 'TYPE_TAG':
      return typeSize(types, t.type_id!, depth + 1);
    default:
      throw new Error(`BTF type ${id} of kind ${t.kind} has no size`);
  }
}

/** Structs by name and .rodata variables, from bpftool's JSON dump of a BTF (raw JSON text). */
export function parseBtfJson(json: string): BtfDescription {
  const list = (JSON.parse(json) as { types: BtfType[] }).types;
  const types = new Map(list.map((t) => [t.id, t]));
  const structs = new Map<string, BtfStruct>();
  const rodata: BtfDescription['rodata'] = [];
  for (const t of list) {
    if (t.kind === 'STRUCT' && t.name !== '(anon)') {
      structs.set(t.name, {
        name: t.name,
        size: t.size!,
        members: t.members!.map((m) => ({
          name: m.name,
          offset: m.bits_offset / 8,
          size: typeSize(types, m.type_id),
          ...(m.bitfield_size ? { bitfield: true } : {}),
        })),
      });
    }
    if (t.kind === 'DATASEC' && t.name === '.rodata') {
      for (const v of t.vars!) rodata.push({ name: types.get(v.type_id)!.name, size: v.size });
    }
  }
  return { structs, rodata };
}

/** The BTF of a built object file. */
export function readObjectBtf(objectFile: string): BtfDescription {
  return parseBtfJson(
    execFileSync('bpftool', ['btf', 'dump', 'file', objectFile, '-j'], {
      encoding: 'utf8',
      timeout: 30_000,
      maxBuffer: 64 << 20,
    }),
  );
}

/** Where a codec's field table and the struct in BTF disagree, one line each (empty: they agree). */
export function layoutMismatches(table: StructLayout, btf: BtfStruct): string[] {
  const out: string[] = [];
  const s = `struct ${table.name}`;
  if (btf.size !== table.size) out.push(`${s} is ${btf.size} bytes in C, ${table.size} in its codec`);
  const inC = new Map(btf.members.map((m, i) => [m.name, { ...m, index: i }]));
  const inTs = new Map(table.fields.map((f, i) => [f.name, { ...f, index: i }]));
  for (const m of btf.members) {
    const f = inTs.get(m.name);
    if (!f) {
      out.push(`${s}: member ${m.name} (offset ${m.offset}, ${m.size} bytes) is not in its codec's field table`);
      continue;
    }
    if (m.bitfield) out.push(`${s}: member ${m.name} is a bitfield, which the codecs do not encode`);
    if (f.offset !== m.offset) out.push(`${s}: member ${m.name} is at offset ${m.offset} in C, ${f.offset} in its codec`);
    if (f.size !== m.size) out.push(`${s}: member ${m.name} has ${m.size} bytes in C, ${f.size} in its codec`);
  }
  for (const f of table.fields) {
    if (!inC.has(f.name)) out.push(`${s}: the codec's field ${f.name} (offset ${f.offset}, ${f.size} bytes) is no member in C`);
  }
  const order = (names: string[]) => names.filter((n) => inC.has(n) && inTs.has(n));
  const cOrder = order(btf.members.map((m) => m.name));
  const tsOrder = order(table.fields.map((f) => f.name));
  if (cOrder.join() !== tsOrder.join())
    out.push(`${s}: members are in the order ${cOrder.join(', ')} in C, ${tsOrder.join(', ')} in its codec`);
  return out;
}
