/* Builds a variant of this tree's eBPF objects with edited headers (a field added, moved or
 * retyped, a counter more, a map more), as a later or earlier release would have them: what the
 * map-migration tests upgrade to and back from. Every edit must apply, or the build fails naming
 * it (so a changed header is noticed, not silently tested unchanged).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { compileBpf } from '../harness/bpf-compile';

export const BPF_SRC = path.resolve(__dirname, '../../bpf');

/** A text edit of one file under bpf/: `find` must match. */
export interface BpfEdit {
  file: string;
  what: string;
  find: RegExp;
  replace: string | ((match: string, ...groups: string[]) => string);
}

/** Copies bpf/, applies the edits, compiles every object as the Makefile does; returns the objects dir. */
export function buildBpfVariant(workDir: string, name: string, edits: BpfEdit[]): string {
  const root = path.join(workDir, 'variants', name);
  const src = path.join(root, 'src');
  const out = path.join(root, 'obj');
  fs.rmSync(root, { recursive: true, force: true });
  fs.cpSync(BPF_SRC, src, { recursive: true });
  fs.mkdirSync(out, { recursive: true });
  for (const e of edits) {
    const file = path.join(src, e.file);
    const text = fs.readFileSync(file, 'utf8');
    if (!e.find.test(text))
      throw new Error(`variant ${name}: edit "${e.what}" does not apply to bpf/${e.file} (${e.find} not found)`);
    fs.writeFileSync(file, text.replace(e.find, e.replace as string));
  }
  for (const c of fs.readdirSync(src).filter((f) => f.endsWith('.c')))
    compileBpf(path.join(src, c), path.join(out, c.replace(/\.c$/, '.o')));
  return out;
}

/** Edits both migration suites use: the kinds of change a next release brings without loss. */
export const EDIT = {
  counterMore: {
    file: 'lib/verdicts.h',
    what: 'a counter more',
    find: /SL_CNT_MAX = (\d+),/,
    replace: (_m: string, n: string) => `SL_CNT_VARIANT = ${n},\n\tSL_CNT_MAX = ${Number(n) + 1},`,
  },
  biggerSockhash: {
    file: 'lib/capture_maps.h',
    what: 'a bigger sockhash',
    find: /(BPF_MAP_TYPE_SOCKHASH\);\s*__uint\(max_entries, )\d+/,
    replace: (_m: string, head: string) => `${head}32768`,
  },
  mapMore: {
    file: 'lib/lb_maps.h',
    what: 'a map more (sl_variant_added)',
    find: /#endif \/\* SLUICE_LB_MAPS_H \*\//,
    replace:
      'struct {\n\t__uint(type, BPF_MAP_TYPE_HASH);\n\t__uint(max_entries, 64);\n\t__type(key, __u32);\n\t__type(value, __u64);\n} sl_variant_added SEC(".maps");\n\n#endif /* SLUICE_LB_MAPS_H */',
  },
} satisfies Record<string, BpfEdit>;
