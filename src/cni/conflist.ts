/*
 * Pure helpers for CNI network configuration files: which names a runtime
 * loads, whether a file's content is a config it would accept, and edits of
 * the `plugins` list.
 *
 * Edits are made on the text, not by re-serialising the parsed object: the
 * primary CNI's file keeps its formatting, key order, escapes and numbers that
 * JSON.parse cannot hold exactly (64-bit integers), and removing sluice's entry
 * again cuts exactly the bytes that appending it inserted. Every function that
 * edits text expects text that JSON.parse accepts (callers parse first).
 */
export type JsonObject = { [key: string]: unknown };

/** The `type` of sluice's entry, which is also the name of its binary in cni-bin-dir. */
export const SLUICE_PLUGIN_TYPE = 'sluice-cni';

/** Extensions libcni, containerd and CRI-O load from cni-conf-dir. */
export const CONFIG_EXTENSIONS: readonly string[] = ['.conflist', '.conf', '.json'];

/** What libcni uses when a single-plugin config converted to a list has no cniVersion (the brief's default). */
export const DEFAULT_CNI_VERSION = '0.3.1';

export type CniConfig =
  /** A `.conflist` (or a `.json` with `plugins`): the runtime runs `plugins` in order. */
  | { kind: 'list'; config: JsonObject; plugins: JsonObject[] }
  /** A single-plugin `.conf` (or a `.json` without `plugins`). */
  | { kind: 'single'; config: JsonObject };

export type ParsedCniConfig = CniConfig | { kind: 'invalid'; reason: string; notJson: boolean };

/** The extension as Go's filepath.Ext sees it: from the last dot, also for dot files (".x.conf"). */
function goExtension(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot);
}

/**
 * Names a runtime considers: libcni's ConfFiles takes every entry with a config extension, dot
 * files included (temp files of careful writers end in another extension, as sluice's do).
 */
export function isConfigFileName(name: string): boolean {
  return CONFIG_EXTENSIONS.includes(goExtension(name));
}

/** The order libcni sorts names in (Go compares strings bytewise, JS by UTF-16 unit). */
export function compareFileNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeJsonType(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'array' : typeof value;
}

/** Whether a `.json` file holds a list: libcni decides by the `plugins` key. */
function isListFileName(name: string, value: JsonObject): boolean {
  return name.endsWith('.conflist') || (name.endsWith('.json') && 'plugins' in value);
}

/** The checks libcni's ConfListFromBytes / ConfFromBytes make before a runtime uses a file. */
function checkList(value: JsonObject): string | undefined {
  if (!('name' in value)) return 'no name';
  if (typeof value.name !== 'string') return `invalid name type ${describeJsonType(value.name)}`;
  if ('cniVersion' in value && typeof value.cniVersion !== 'string')
    return `invalid cniVersion type ${describeJsonType(value.cniVersion)}`;
  if ('disableCheck' in value && typeof value.disableCheck !== 'boolean')
    return `invalid disableCheck type ${describeJsonType(value.disableCheck)}`;
  if (!('plugins' in value)) return "no 'plugins' key";
  if (!Array.isArray(value.plugins)) return `invalid 'plugins' type ${describeJsonType(value.plugins)}`;
  if (value.plugins.length === 0) return 'no plugins in list';
  for (const [index, plugin] of value.plugins.entries()) {
    if (!isJsonObject(plugin)) return `plugins[${index}] is not an object`;
    if (typeof plugin.type !== 'string' || plugin.type === '') return `plugins[${index}] has no type`;
  }
  return undefined;
}

function checkSingle(value: JsonObject): string | undefined {
  if (typeof value.type !== 'string' || value.type === '') return "missing 'type'";
  if ('name' in value && typeof value.name !== 'string') return `invalid name type ${describeJsonType(value.name)}`;
  if ('cniVersion' in value && typeof value.cniVersion !== 'string')
    return `invalid cniVersion type ${describeJsonType(value.cniVersion)}`;
  return undefined;
}

/** Classifies a file's content as the runtime would; `name` decides list vs single by extension. */
export function parseCniConfig(name: string, text: string): ParsedCniConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { kind: 'invalid', notJson: true, reason: err instanceof Error ? err.message : String(err) };
  }
  if (!isJsonObject(value))
    return { kind: 'invalid', notJson: false, reason: `not a JSON object but ${describeJsonType(value)}` };
  if (isListFileName(name, value)) {
    const problem = checkList(value);
    if (problem !== undefined) return { kind: 'invalid', notJson: false, reason: problem };
    return { kind: 'list', config: value, plugins: value.plugins as JsonObject[] };
  }
  const problem = checkSingle(value);
  if (problem !== undefined) return { kind: 'invalid', notJson: false, reason: problem };
  return { kind: 'single', config: value };
}

export function isSluiceEntry(plugin: unknown): boolean {
  return isJsonObject(plugin) && plugin.type === SLUICE_PLUGIN_TYPE;
}

/** Deep equality of parsed JSON values; object key order does not matter, array order does. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => jsonEqual(item, b[i]));
  }
  if (!isJsonObject(a) || !isJsonObject(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && jsonEqual(a[key], b[key]));
}

/** A list config as it would be without sluice: what the primary CNI wrote, if nobody else edited it. */
export function withoutSluiceValue(config: JsonObject): JsonObject {
  const plugins = Array.isArray(config.plugins) ? config.plugins.filter((p) => !isSluiceEntry(p)) : config.plugins;
  return { ...config, plugins };
}

/* ---- Locating values in JSON text ---- */

/** A member of an object (start = its key) or an element of an array, as [start, end) offsets. */
interface TextItem {
  start: number;
  end: number;
  /** Decoded key, for object members. */
  key?: string;
  /** Where the member's value starts (= start for array elements). */
  valueStart: number;
}

interface TextContainer {
  /** Offset of `{` or `[`. */
  open: number;
  /** Offset of `}` or `]`. */
  close: number;
  items: TextItem[];
}

function skipWhitespace(text: string, i: number): number {
  while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  return i;
}

function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  throw new SyntaxError('Cannot locate JSON value: unterminated string');
}

function valueEnd(text: string, start: number): number {
  const first = text[start];
  if (first === '"') return stringEnd(text, start);
  if (first === '{' || first === '[') {
    let depth = 0;
    for (let i = start; i < text.length; i++) {
      const c = text[i];
      if (c === '"') i = stringEnd(text, i) - 1;
      else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    throw new SyntaxError('Cannot locate JSON value: unbalanced brackets');
  }
  let i = start;
  while (i < text.length && !',]} \t\n\r'.includes(text[i])) i++;
  return i;
}

function readContainer(text: string, open: number): TextContainer {
  const isObject = text[open] === '{';
  const items: TextItem[] = [];
  let i = skipWhitespace(text, open + 1);
  if (text[i] === '}' || text[i] === ']') return { open, close: i, items };
  for (;;) {
    const start = i;
    let key: string | undefined;
    if (isObject) {
      const keyEnd = stringEnd(text, i);
      key = JSON.parse(text.slice(i, keyEnd)) as string;
      i = skipWhitespace(text, keyEnd) + 1; // past ':'
      i = skipWhitespace(text, i);
    }
    const end = valueEnd(text, i);
    items.push({ start, end, key, valueStart: i });
    i = skipWhitespace(text, end);
    if (text[i] !== ',') return { open, close: i, items };
    i = skipWhitespace(text, i + 1);
  }
}

function topObject(text: string): TextContainer {
  const open = skipWhitespace(text, 0);
  if (text[open] !== '{') throw new SyntaxError('Cannot locate JSON value: the top level is not an object');
  return readContainer(text, open);
}

/** The `plugins` array; the last `plugins` key wins, as in JSON.parse and Go. */
function pluginsArray(text: string): TextContainer {
  const members = topObject(text).items.filter((m) => m.key === 'plugins');
  const member = members[members.length - 1];
  if (member === undefined || text[member.valueStart] !== '[')
    throw new SyntaxError("Cannot locate JSON value: no 'plugins' array");
  return readContainer(text, member.valueStart);
}

/* ---- Editing JSON text ---- */

/** Cuts item `index` together with one adjacent comma, so the rest keeps its layout. */
function removeItem(text: string, container: TextContainer, index: number): string {
  const { items } = container;
  if (items.length === 1) return text.slice(0, container.open + 1) + text.slice(container.close);
  if (index > 0) return text.slice(0, items[index - 1].end) + text.slice(items[index].end);
  return text.slice(0, items[0].start) + text.slice(items[1].start);
}

/** The indentation unit of a pretty-printed file: the whitespace of its first indented line. */
function indentUnit(text: string): string {
  const match = /\n([ \t]+)\S/.exec(text);
  return match === null ? '  ' : match[1];
}

/** The whitespace an item's line starts with, when the item starts its line; undefined when it does not. */
function lineIndentBefore(text: string, offset: number): string | undefined {
  const lineStart = text.lastIndexOf('\n', offset - 1) + 1;
  if (lineStart === 0) return undefined;
  const prefix = text.slice(lineStart, offset);
  return /^[ \t]*$/.test(prefix) ? prefix : undefined;
}

/** Serialises a value for insertion at a given indentation, compact when the surrounding list is on one line. */
function renderValue(value: unknown, unit: string, indent: string | undefined): string {
  if (indent === undefined) return JSON.stringify(value);
  return JSON.stringify(value, null, unit).replace(/\n/g, '\n' + indent);
}

/** Appends an element after the last one, copying the separator layout the list already uses. */
function appendItem(text: string, container: TextContainer, value: unknown): string {
  const { items } = container;
  if (items.length === 0) {
    return text.slice(0, container.open + 1) + JSON.stringify(value) + text.slice(container.open + 1);
  }
  const last = items[items.length - 1];
  const separatorStart = items.length === 1 ? container.open + 1 : text.indexOf(',', items[items.length - 2].end) + 1;
  const separator = text.slice(separatorStart, last.start);
  const newline = separator.lastIndexOf('\n');
  const indent = newline < 0 ? undefined : separator.slice(newline + 1);
  return text.slice(0, last.end) + ',' + separator + renderValue(value, indentUnit(text), indent) + text.slice(last.end);
}

function replaceItem(text: string, item: TextItem, value: unknown): string {
  const rendered = renderValue(value, indentUnit(text), lineIndentBefore(text, item.start));
  return text.slice(0, item.start) + rendered + text.slice(item.end);
}

export interface ListEdit {
  text: string;
  /** Why the text changed; undefined when it already had the entry, unchanged and last. */
  change?: string;
}

/**
 * Makes `entry` the last plugin of a list config's text, exactly once: appended
 * when missing, replaced in place when it differs, moved last when chained
 * plugins follow it (they would see a prevResult sluice did not produce).
 * Other plugins and top-level fields keep their bytes.
 */
export function withSluiceEntryLast(text: string, entry: JsonObject): ListEdit {
  const plugins = (JSON.parse(text) as JsonObject).plugins as unknown[];
  const sluiceIndexes = plugins.flatMap((p, i) => (isSluiceEntry(p) ? [i] : []));
  const lastIndex = plugins.length - 1;
  if (sluiceIndexes.length === 0)
    return { text: appendItem(text, pluginsArray(text), entry), change: 'sluice-cni entry missing' };
  let edited = text;
  let change: string | undefined;
  const sluiceIsLast = sluiceIndexes[sluiceIndexes.length - 1] === lastIndex;
  if (sluiceIsLast && !jsonEqual(plugins[lastIndex], entry)) {
    edited = replaceItem(edited, pluginsArray(edited).items[lastIndex], entry);
    change = 'sluice-cni entry outdated';
  }
  // Remove the others from the highest index down, so lower offsets stay valid.
  const toRemove = sluiceIsLast ? sluiceIndexes.slice(0, -1) : sluiceIndexes;
  for (const index of [...toRemove].reverse()) edited = removeItem(edited, pluginsArray(edited), index);
  if (!sluiceIsLast) {
    edited = appendItem(edited, pluginsArray(edited), entry);
    change = 'sluice-cni entry not last';
  } else if (toRemove.length > 0) {
    change ??= 'duplicate sluice-cni entries';
  }
  return { text: edited, change };
}

/** Removes every sluice entry from a list config's text, leaving all other bytes as they are. */
export function withoutSluiceEntries(text: string): string {
  let edited = text;
  for (;;) {
    const plugins = (JSON.parse(edited) as JsonObject).plugins as unknown[];
    let index = plugins.length - 1;
    while (index >= 0 && !isSluiceEntry(plugins[index])) index--;
    if (index < 0) return edited;
    edited = removeItem(edited, pluginsArray(edited), index);
  }
}

/** `<stem>.conflist` for a single-plugin `<stem>.conf` / `<stem>.json`. */
export function listFileNameFor(singleName: string): string {
  return singleName.slice(0, singleName.length - goExtension(singleName).length) + '.conflist';
}

/**
 * The text of the list a single-plugin config becomes, without sluice's entry:
 * `{cniVersion, name, plugins: [<the config minus cniVersion and name>]}`, as
 * libcni's ConfListFromConf builds it in memory. The plugin keeps its original
 * text (re-indented one level deeper). A missing name stays empty, as in libcni,
 * so results the runtime cached under the network name still match.
 */
export function singleToListText(text: string): string {
  const config = JSON.parse(text) as JsonObject;
  const top = topObject(text);
  let plugin = text.slice(top.open, top.close + 1);
  for (;;) {
    const members = readContainer(plugin, 0);
    const index = members.items.findIndex((m) => m.key === 'cniVersion' || m.key === 'name');
    if (index < 0) break;
    plugin = removeItem(plugin, members, index);
  }
  const unit = indentUnit(text);
  const cniVersion = typeof config.cniVersion === 'string' ? config.cniVersion : DEFAULT_CNI_VERSION;
  const name = typeof config.name === 'string' ? config.name : '';
  return [
    '{',
    `${unit}"cniVersion": ${JSON.stringify(cniVersion)},`,
    `${unit}"name": ${JSON.stringify(name)},`,
    `${unit}"plugins": [`,
    unit + unit + plugin.replace(/\n/g, '\n' + unit + unit),
    `${unit}]`,
    '}',
    '',
  ].join('\n');
}
