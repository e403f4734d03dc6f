/* Conversion of map entries between two layouts of the same map, field by field: a plan of byte
 * copies computed once from the two flattened BTF layouts, applied to every key and value.
 * Fields are matched by their path (`e[3].vip.b`); a field the new layout adds starts at zero,
 * an array keeps its first elements, an unsigned integer may widen. Anything else (a type
 * changed, a signed integer widened, a bitfield moved) makes the layouts unconvertible here:
 * such a change needs a registered converter (src/map-migrations.ts).
 */
import { flatten, type Leaf, type TypeLayout } from './map-spec';

/** Copy `len` bytes from offset `from` of the old buffer to offset `to` of the new one. */
export interface CopyOp {
  from: number;
  to: number;
  len: number;
}

export interface ConversionPlan {
  ops: CopyOp[];
  /** size of the new key or value */
  size: number;
  /** fields of the new layout that start at zero */
  added: string[];
  /** fields of the old layout whose contents are left behind (padding excluded) */
  dropped: string[];
  /** true when the plan copies the old bytes as they are (layouts equal) */
  verbatim: boolean;
}

/** Why two layouts cannot be converted field by field. */
export class UnconvertibleLayout extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`field ${field || '(whole value)'}: ${reason}`);
    this.name = 'UnconvertibleLayout';
  }
}

/** Padding carries nothing: it may vanish or become a field (zero by the writers' contract). */
function isPadding(path: string): boolean {
  const last = path.split('.').pop() ?? '';
  return /^_*pad/i.test(last.replace(/\[\d+\]$/, ''));
}

function mergeOps(ops: CopyOp[]): CopyOp[] {
  const sorted = [...ops].sort((a, b) => a.to - b.to);
  const out: CopyOp[] = [];
  for (const op of sorted) {
    const last = out[out.length - 1];
    if (last && last.from + last.len === op.from && last.to + last.len === op.to) last.len += op.len;
    else out.push({ ...op });
  }
  return out;
}

function matchLeaf(o: Leaf, n: Leaf, ops: CopyOp[], dropped: string[]): void {
  if (o.bitfield || n.bitfield) {
    // bits share bytes with their neighbours: byte copies cannot move them
    throw new UnconvertibleLayout(o.path, 'a layout with bitfields converts only when it is unchanged');
  }
  if (o.kind !== n.kind) throw new UnconvertibleLayout(o.path, `${o.kind} became ${n.kind}`);
  if (o.kind === 'opaque' && o.elemSize !== n.elemSize)
    throw new UnconvertibleLayout(o.path, `opaque ${o.elemSize} bytes became ${n.elemSize}`);
  if (o.kind === 'float' && o.elemSize !== n.elemSize)
    throw new UnconvertibleLayout(o.path, `float of ${o.elemSize} bytes became ${n.elemSize}`);
  if (n.elemSize < o.elemSize) throw new UnconvertibleLayout(o.path, `narrowed from ${o.elemSize} to ${n.elemSize} bytes`);
  if (n.elemSize > o.elemSize && o.signed)
    throw new UnconvertibleLayout(o.path, `a signed integer widened from ${o.elemSize} to ${n.elemSize} bytes`);
  if (n.elemSize === o.elemSize && o.signed !== n.signed) throw new UnconvertibleLayout(o.path, `signedness changed`);
  const count = Math.min(o.count, n.count);
  if (o.count > n.count) dropped.push(`${o.path}[${n.count}..${o.count - 1}]`);
  if (n.elemSize === o.elemSize) {
    ops.push({ from: o.off, to: n.off, len: count * o.elemSize });
  } else {
    // little-endian: the old bytes are the low bytes of the wider field, the rest stays zero
    for (let i = 0; i < count; i++) ops.push({ from: o.off + i * o.elemSize, to: n.off + i * n.elemSize, len: o.elemSize });
  }
}

/**
 * The field-by-field plan from one layout to another. Layouts without BTF (null) convert only
 * when they are the same size (copied as they are).
 */
export function planConversion(
  oldT: TypeLayout | null,
  oldSize: number,
  newT: TypeLayout | null,
  newSize: number,
): ConversionPlan {
  if (oldT === null || newT === null) {
    if (oldSize !== newSize) throw new UnconvertibleLayout('', `no BTF to convert ${oldSize} bytes into ${newSize} by field`);
    return { ops: [{ from: 0, to: 0, len: oldSize }], size: newSize, added: [], dropped: [], verbatim: true };
  }
  if (oldSize === newSize && JSON.stringify(oldT) === JSON.stringify(newT)) {
    return { ops: [{ from: 0, to: 0, len: oldSize }], size: newSize, added: [], dropped: [], verbatim: true };
  }
  const oldLeaves = flatten(oldT);
  const newLeaves = new Map(flatten(newT).map((l) => [l.path, l]));
  const ops: CopyOp[] = [];
  const dropped: string[] = [];
  const matched = new Set<string>();
  const newPaths = [...newLeaves.keys()];
  const oldPaths = oldLeaves.map((l) => l.path);
  const inside = (child: string, parent: string) => child.startsWith(`${parent}.`) || child.startsWith(`${parent}[`);
  for (const o of oldLeaves) {
    const n = newLeaves.get(o.path);
    if (!n) {
      // the same name now holds a struct or an array of them: a type change, not a removal
      if (newPaths.some((p) => inside(p, o.path)))
        throw new UnconvertibleLayout(o.path, `${o.kind} became a struct or an array of structs`);
      if (!isPadding(o.path)) dropped.push(o.path);
      continue;
    }
    matched.add(o.path);
    matchLeaf(o, n, ops, dropped);
  }
  for (const p of newPaths) {
    if (!matched.has(p) && oldPaths.some((o) => inside(o, p)))
      throw new UnconvertibleLayout(p, `a struct or an array of structs became ${newLeaves.get(p)!.kind}`);
  }
  const added = [...newLeaves.values()].filter((l) => !matched.has(l.path) && !isPadding(l.path)).map((l) => l.path);
  if ([...newLeaves.values()].some((l) => l.bitfield))
    throw new UnconvertibleLayout('', 'a layout with bitfields converts only when it is unchanged');
  return { ops: mergeOps(ops.filter((op) => op.len > 0)), size: newSize, added, dropped, verbatim: false };
}

/** Applies a plan: writes the converted entry into `dst` (zeroed first) at dstOff. */
export function applyPlan(plan: ConversionPlan, src: Buffer, srcOff: number, dst: Buffer, dstOff: number): void {
  dst.fill(0, dstOff, dstOff + plan.size);
  for (const op of plan.ops) src.copy(dst, dstOff + op.to, srcOff + op.from, srcOff + op.from + op.len);
}
