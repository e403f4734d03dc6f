/* The field table of a C struct as a TypeScript codec reads and writes it: each member's C name,
 * byte offset and size. Codecs take their offsets from the table, so the table is what they do;
 * test/unit/contract-layout.test.ts compares every table with the struct in the objects' BTF.
 */
import type { Codec } from './map';

/** One member of a C struct: its name in C, its byte offset and its size in bytes (arrays: all elements). */
export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

export interface StructLayout<F extends string = string> {
  /** the struct's tag in C: `struct sl_svc_key` is `sl_svc_key` */
  readonly name: string;
  readonly size: number;
  /** every member, in C order, padding members included */
  readonly fields: readonly Field[];
  /** byte offset of each member by its C name */
  readonly at: Readonly<Record<F, number>>;
}

/** A codec of a struct shared with the programs, exposing the field table it encodes by. */
export interface StructCodec<T> extends Codec<T> {
  readonly layout: StructLayout;
}

/**
 * A struct's field table from [name, offset, size] rows in C order. Rows must not overlap and must
 * fit in size: a table that contradicts itself is refused here, before any codec uses it.
 */
export function defineStruct<const F extends string>(
  name: string,
  size: number,
  rows: ReadonlyArray<readonly [F, number, number]>,
): StructLayout<F> {
  const fields: Field[] = [];
  let end = 0;
  for (const [field, offset, bytes] of rows) {
    if (offset < end)
      throw new RangeError(
        `Cannot define struct ${name}: member ${field} at offset ${offset} overlaps the member before it (which ends at ${end})`,
      );
    if (bytes <= 0 || offset + bytes > size)
      throw new RangeError(
        `Cannot define struct ${name}: member ${field} (offset ${offset}, ${bytes} bytes) does not fit in ${size} bytes`,
      );
    fields.push({ name: field, offset, size: bytes });
    end = offset + bytes;
  }
  const at = Object.fromEntries(fields.map((f) => [f.name, f.offset])) as Record<F, number>;
  return { name, size, fields, at };
}

/** Binds a codec to the struct it encodes (its size is the struct's). */
export function structCodec<T>(layout: StructLayout, codec: Omit<Codec<T>, 'size'>): StructCodec<T> {
  return { size: layout.size, layout, encode: codec.encode, decode: codec.decode };
}
