/* Prints the address changes of its network namespace as JSON lines, through
 * src/native/addr-watch.ts: {"event":"ready"} once watching, then per (coalesced) callback
 * {"event":"change","overrun":bool,"addresses":[...]} with os.networkInterfaces()'s addresses.
 * Exits when stdin closes. test/unit/native-io.test.ts runs it inside a fresh namespace.
 *
 *   --rcvbuf N   receive buffer of the netlink socket (bytes)
 *   --burst N    right after "ready", add N addresses 10.255.a.b/32 to lo in one `ip -batch`,
 *                synchronously: the event loop is blocked meanwhile, so with a small --rcvbuf the
 *                notifications overrun. Needs --host-netns-ino.
 *   --host-netns-ino I   the inode of the caller's own network namespace (stat /proc/self/ns/net):
 *                --burst refuses to run there, only in a namespace made for it.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { watchAddresses } from '../../src/native';

function option(name: string): number | undefined {
  const i = process.argv.indexOf(name);
  if (i < 0) return undefined;
  const n = Number(process.argv[i + 1]);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} needs a non-negative integer, got ${process.argv[i + 1]}`);
  return n;
}

function addresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flatMap((list) => list ?? [])
    .map((a) => a.address)
    .sort();
}

function print(rec: object): void {
  process.stdout.write(JSON.stringify(rec) + '\n');
}

const rcvbuf = option('--rcvbuf');
const burst = option('--burst');

const w = watchAddresses((change) => print({ event: 'change', overrun: change.overrun, addresses: addresses() }), {
  receiveBufferBytes: rcvbuf,
});
print({ event: 'ready' });

if (burst) {
  const hostIno = option('--host-netns-ino');
  const ownIno = fs.statSync('/proc/self/ns/net').ino;
  if (hostIno === undefined || hostIno === ownIno) {
    throw new Error(`--burst refused: give --host-netns-ino, and run in another namespace (this one is ${ownIno})`);
  }
  const lines: string[] = [];
  for (let i = 0; i < burst; i++) lines.push(`address add 10.255.${i >> 8}.${i & 255}/32 dev lo`);
  execFileSync('ip', ['-batch', '-'], { input: lines.join('\n') + '\n', timeout: 20000 });
}

process.stdin.on('data', () => undefined);
process.stdin.on('end', () => w.close());
