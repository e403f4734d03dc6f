/* Every struct the TypeScript side encodes, member by member (name, byte offset, size, order),
 * against the BTF of every built object that has it; every struct of shared.h encoded by exactly
 * one codec or named as the kernel's own; and the check failing when C changes alone, on a mutated
 * BTF description and on an object built from an edited shared.h.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compileBpf } from '../harness/bpf-compile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventCodec, STRUCT_CODECS, svcValCodec } from '../../src/bpf/layout';
import type { StructCodec } from '../../src/bpf/struct-layout';
import { layoutMismatches, readObjectBtf, type BtfStruct } from './contract/btf';

const ROOT = path.resolve(__dirname, '../..');
const OBJECT_DIR = path.join(ROOT, 'build/bpf');
const objects = fs
  .readdirSync(OBJECT_DIR)
  .filter((f) => f.endsWith('.o'))
  .sort();
const btf = new Map(objects.map((f) => [f, readObjectBtf(path.join(OBJECT_DIR, f))]));

/** Structs of shared.h that only the programs read and write (socket storage, in-flight keys): no codec. */
const KERNEL_ONLY: Record<string, string> = {
  sl_orig_dst: 'socket storage and sl_origdst_syn values, read by the programs only',
  sl_origdst_key: 'keys of sl_origdst_syn, written by sockops only',
  sl_origdst_v0_key: "keys of sl_origdst (v0.1.0's layout), written by sockops only",
  sl_flow_key: 'keys of sl_bypass_flows, written by sockops only',
  sl_sock_rev: 'socket storage of socket-LB, reachable through sockets only',
  sl_sock_rev_entry: 'an element of sl_sock_rev',
};

/** Structs user space decodes that no object's BTF holds (only ever local variables in C): their
 * size is pinned by a _Static_assert in shared.h against the codec's. */
const NOT_IN_BTF: Record<string, string> = {
  sl_destroyed: 'written by bpf_seq_write from a local variable of bpf/sock_destroy.c; decoded by destroyedCodec',
  sl_event:
    'queued in the ring buffer sl_events, which has no value type; checked below against a snippet compiled from shared.h',
};

/** Compiles C declaring `decl` (over bpf/lib/shared.h) as the programs are compiled, and reads its BTF. */
function snippetBtf(decl: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-contract-snippet-'));
  try {
    const src = path.join(dir, 'snippet.c');
    fs.writeFileSync(src, `#include "${path.join(ROOT, 'bpf/lib/shared.h')}"\n${decl}\n`);
    compileBpf(src, path.join(dir, 'snippet.o'));
    return readObjectBtf(path.join(dir, 'snippet.o'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function structOf(codec: StructCodec<unknown>): Array<[string, BtfStruct]> {
  return objects.flatMap((f) => {
    const s = btf.get(f)!.structs.get(codec.layout.name);
    return s ? [[f, s] as [string, BtfStruct]] : [];
  });
}

describe('codecs against the objects BTF', () => {
  it('there are objects to compare with (make all builds them)', () => {
    expect(objects).toEqual(expect.arrayContaining(['capture.o', 'sock_lb.o']));
  });

  it.each(STRUCT_CODECS.map((c) => [c.layout.name, c] as const))(
    'struct %s: every member has the name, offset and size of the codec field table',
    (_name, codec) => {
      const found = structOf(codec);
      expect(found.length, `no object has struct ${codec.layout.name}`).toBeGreaterThan(0);
      for (const [file, s] of found) expect(layoutMismatches(codec.layout, s), file).toEqual([]);
    },
  );

  it("struct sl_event (a ring buffer record, in no map): every member has the name, offset and size of eventCodec's table", () => {
    // a global of the type puts it in the BTF, as the programs' compiler lays it out
    const s = snippetBtf('struct sl_event sl_event_layout;').structs.get('sl_event');
    expect(s, 'the snippet has struct sl_event').toBeDefined();
    expect(layoutMismatches(eventCodec.layout, s!)).toEqual([]);
  });

  it('every struct of shared.h has exactly one codec, or is named as one only the programs use', () => {
    const header = fs.readFileSync(path.join(ROOT, 'bpf/lib/shared.h'), 'utf8');
    const declared = [...header.matchAll(/^struct (sl_\w+) \{/gm)].map((m) => m[1]).sort();
    const encoded = STRUCT_CODECS.map((c) => c.layout.name);
    expect(new Set(encoded).size, `two codecs for one struct: ${encoded.join(', ')}`).toBe(encoded.length);
    for (const name of encoded) expect(KERNEL_ONLY[name], `${name} has a codec and is named kernel-only`).toBeUndefined();
    expect([...encoded, ...Object.keys(KERNEL_ONLY), ...Object.keys(NOT_IN_BTF)].sort()).toEqual(declared);
  });
});

describe('the layout check fails when C changes alone', () => {
  const svcVal = structOf(svcValCodec)[0][1];

  it('a member renamed', () => {
    const renamed = { ...svcVal, members: svcVal.members.map((m) => (m.name === 'count' ? { ...m, name: 'n_slots' } : m)) };
    expect(layoutMismatches(svcValCodec.layout, renamed)).toEqual([
      "struct sl_svc_val: member n_slots (offset 4, 2 bytes) is not in its codec's field table",
      "struct sl_svc_val: the codec's field count (offset 4, 2 bytes) is no member in C",
    ]);
  });

  it('two members swapped', () => {
    const swapped = {
      ...svcVal,
      members: svcVal.members.map((m) =>
        m.name === 'count' ? { ...m, offset: 6 } : m.name === 'flags' ? { ...m, offset: 4 } : m,
      ),
    };
    swapped.members.sort((a, b) => a.offset - b.offset);
    expect(layoutMismatches(svcValCodec.layout, swapped)).toEqual([
      'struct sl_svc_val: member flags is at offset 4 in C, 6 in its codec',
      'struct sl_svc_val: member count is at offset 6 in C, 4 in its codec',
      'struct sl_svc_val: members are in the order id, flags, count, affinity_s in C, id, count, flags, affinity_s in its codec',
    ]);
  });

  it('a member widened', () => {
    const widened = {
      ...svcVal,
      members: svcVal.members.map((m) => (m.name === 'affinity_s' ? { ...m, size: 8 } : m)),
      size: 16,
    };
    expect(layoutMismatches(svcValCodec.layout, widened)).toEqual([
      'struct sl_svc_val is 16 bytes in C, 12 in its codec',
      'struct sl_svc_val: member affinity_s has 8 bytes in C, 4 in its codec',
    ]);
  });

  describe('an object built from an edited shared.h', () => {
    let dir = '';
    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-contract-layout-'));
    });
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('a field added to sl_svc_val and the fields of sl_affinity_val moved are reported', () => {
      fs.cpSync(path.join(ROOT, 'bpf'), path.join(dir, 'bpf'), { recursive: true });
      const header = path.join(dir, 'bpf/lib/shared.h');
      let text = fs.readFileSync(header, 'utf8');
      const edits: Array<[RegExp, string]> = [
        [/(struct sl_svc_val \{[^}]*)\};/, '$1\t__u32 weight;\n};'],
        [
          /struct sl_affinity_val \{[^}]*\};/,
          'struct sl_affinity_val {\n\t__u32 backend_id;\n\t__u32 hits;\n\t__u64 last_ns;\n};',
        ],
      ];
      for (const [find, replace] of edits) {
        expect(text, `edit ${find} applies`).toMatch(find);
        text = text.replace(find, replace);
      }
      fs.writeFileSync(header, text);
      const obj = path.join(dir, 'sock_lb.o');
      compileBpf(path.join(dir, 'bpf/sock_lb.c'), obj, 120_000);
      const edited = readObjectBtf(obj);
      const svc = STRUCT_CODECS.find((c) => c.layout.name === 'sl_svc_val')!;
      const aff = STRUCT_CODECS.find((c) => c.layout.name === 'sl_affinity_val')!;
      expect(layoutMismatches(svc.layout, edited.structs.get('sl_svc_val')!)).toEqual([
        'struct sl_svc_val is 16 bytes in C, 12 in its codec',
        "struct sl_svc_val: member weight (offset 12, 4 bytes) is not in its codec's field table",
      ]);
      expect(layoutMismatches(aff.layout, edited.structs.get('sl_affinity_val')!)).toEqual([
        'struct sl_affinity_val: member backend_id is at offset 0 in C, 8 in its codec',
        "struct sl_affinity_val: member hits (offset 4, 4 bytes) is not in its codec's field table",
        'struct sl_affinity_val: member last_ns is at offset 8 in C, 0 in its codec',
        "struct sl_affinity_val: the codec's field pad (offset 12, 4 bytes) is no member in C",
        'struct sl_affinity_val: members are in the order backend_id, last_ns in C, last_ns, backend_id in its codec',
      ]);
    });
  });
});
