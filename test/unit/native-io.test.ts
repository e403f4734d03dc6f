/* The native I/O layer (native/io.c, src/native/) against real sockets: SOCK_SEQPACKET with fd
 * passing, the poller thread, and rtnetlink address notifications in a namespace of our own.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createNode, run, type SimNode } from '../harness';
import { loadIo } from '../../src/native/io-lib';
import { closePoller, NativeIoError, SeqpacketConn, SeqpacketServer, watch, watchedCount } from '../../src/native';

const ROOT = path.resolve(__dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/.bin/tsx');

let dir: string;
let sockets = 0;
/** A fresh socket path in this file's temp dir. */
function sockPath(): string {
  return path.join(dir, `s${++sockets}.sock`);
}

/** Everything opened by a test, closed after it even when it fails. */
const opened: { close(): void }[] = [];
function track<T extends { close(): void }>(x: T): T {
  opened.push(x);
  return x;
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-native-io-'));
});
afterEach(() => {
  for (const x of opened.splice(0)) x.close();
});
afterAll(() => {
  closePoller();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Received {
  msg: Buffer;
  fd?: number;
  truncated: boolean;
}

/** Resolves with the next `count` messages of conn (its message handler from now on). */
function nextMessages(conn: SeqpacketConn, count: number): Promise<Received[]> {
  return new Promise((resolve, reject) => {
    const got: Received[] = [];
    conn.onClose((err) =>
      reject(new Error(`${conn.label} closed after ${got.length} of ${count} messages: ${err?.message ?? 'end of stream'}`)),
    );
    conn.onMessage((msg, fd, truncated) => {
      got.push({ msg, fd, truncated });
      if (got.length === count) resolve(got);
    });
  });
}

/** A server at a fresh path and one client connected to it, with the accepted side. */
async function pair(opts: { serverMaxBytes?: number; clientMaxBytes?: number } = {}) {
  const p = sockPath();
  let accepted!: (c: SeqpacketConn) => void;
  const acceptedConn = new Promise<SeqpacketConn>((r) => (accepted = r));
  const server = track(SeqpacketServer.listen(p, (c) => accepted(track(c)), { maxMessageBytes: opts.serverMaxBytes }));
  const client = track(SeqpacketConn.connect(p, { maxMessageBytes: opts.clientMaxBytes }));
  return { path: p, server, client, peer: await acceptedConn };
}

/** A FIFO opened at both ends (Node has no pipe(2)); writes to it fail with EPIPE once no reader is left. */
function fifo(): { r: number; w: number; ino: number; close(): void } {
  const p = path.join(dir, `fifo${++sockets}`);
  execFileSync('mkfifo', [p]);
  const r = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const ino = fs.fstatSync(r).ino;
  const ends = { r, w, ino, close: () => undefined };
  const closeQuietly = (fd: number) => {
    try {
      fs.closeSync(fd);
    } catch {
      /* closed by the test already */
    }
  };
  ends.close = () => {
    closeQuietly(ends.r);
    closeQuietly(ends.w);
    fs.rmSync(p, { force: true });
  };
  return ends;
}

function openFds(): Map<string, string> {
  const m = new Map<string, string>();
  for (const n of fs.readdirSync('/proc/self/fd')) {
    try {
      m.set(n, fs.readlinkSync(`/proc/self/fd/${n}`));
    } catch {
      /* the fd of readdir itself, gone by now */
    }
  }
  return m;
}

function pollerThreads(): number {
  return fs.readdirSync('/proc/self/task').filter((t) => {
    try {
      return fs.readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim() === 'sl-poller';
    } catch {
      return false;
    }
  }).length;
}

describe('seqpacket sockets', () => {
  it('keep message boundaries: 100 sends of different sizes arrive as 100 messages, in order', async () => {
    const { client, peer } = await pair();
    const sent = Array.from({ length: 100 }, (_, i) => Buffer.alloc(1 + ((i * 37) % 500), i));
    const got = nextMessages(peer, sent.length);
    for (const m of sent) client.send(m);
    const received = await got;
    expect(received.map((r) => r.msg)).toEqual(sent);
    expect(received.every((r) => r.fd === undefined && !r.truncated)).toBe(true);
  });

  it('pass an fd with a message: the receiver gets the same file (network namespace and pipe)', async () => {
    const { client, peer } = await pair();
    const ns = fs.openSync('/proc/self/ns/net', 'r');
    const pipe = track(fifo());
    const got = nextMessages(peer, 3);
    try {
      client.send(Buffer.from('netns'), ns);
      client.send(Buffer.from('pipe'), [pipe.r]);
      client.send(Buffer.from('none'));
    } finally {
      fs.closeSync(ns);
    }
    const [a, b, c] = await got;
    try {
      expect(a.msg.toString()).toBe('netns');
      expect(a.fd).toBeTypeOf('number');
      const nsStat = fs.fstatSync(a.fd!);
      const ownNs = fs.statSync('/proc/self/ns/net');
      expect([nsStat.dev, nsStat.ino]).toEqual([ownNs.dev, ownNs.ino]);
      expect(b.msg.toString()).toBe('pipe');
      expect(fs.fstatSync(b.fd!).ino).toBe(pipe.ino);
      // and it is the same pipe, not just the same inode number: bytes go through
      fs.writeSync(pipe.w, 'through');
      const buf = Buffer.alloc(16);
      expect(buf.subarray(0, fs.readSync(b.fd!, buf)).toString()).toBe('through');
      expect(c.msg.toString()).toBe('none');
      expect(c.fd).toBeUndefined();
      // received fds are close-on-exec (MSG_CMSG_CLOEXEC)
      const flags = fs.readFileSync(`/proc/self/fdinfo/${a.fd}`, 'utf8').match(/^flags:\s+(\d+)/m)![1];
      expect(parseInt(flags, 8) & 0o2000000).not.toBe(0);
    } finally {
      if (a.fd !== undefined) fs.closeSync(a.fd);
      if (b.fd !== undefined) fs.closeSync(b.fd);
    }
  });

  it('deliver the first of several passed fds and close the others', async () => {
    const { client, peer } = await pair();
    const [first, second, third] = [track(fifo()), track(fifo()), track(fifo())];
    const got = nextMessages(peer, 1);
    client.send(Buffer.from('three fds'), [first.r, second.r, third.r]);
    // the sender's copies go: only what the receiver kept still reads these pipes
    for (const f of [first, second, third]) fs.closeSync(f.r);
    const [m] = await got;
    expect(m.msg.toString()).toBe('three fds');
    expect(fs.fstatSync(m.fd!).ino).toBe(first.ino);
    expect(fs.writeSync(first.w, 'x')).toBe(1);
    expect(() => fs.writeSync(second.w, 'x')).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    expect(() => fs.writeSync(third.w, 'x')).toThrow(expect.objectContaining({ code: 'EPIPE' }));
    fs.closeSync(m.fd!);
    expect(() => fs.writeSync(first.w, 'x')).toThrow(expect.objectContaining({ code: 'EPIPE' }));
  });

  it('report a message longer than the read buffer as truncated, cut to the buffer', async () => {
    const { client, peer } = await pair({ clientMaxBytes: undefined, serverMaxBytes: 16 });
    const long = Buffer.alloc(2000, 7);
    long.write('head');
    const got = nextMessages(client, 2);
    peer.send(long); // the client reads 1024 bytes by default
    peer.send(Buffer.alloc(1024, 1));
    const [cut, exact] = await got;
    expect(cut.truncated).toBe(true);
    expect(cut.msg).toEqual(long.subarray(0, 1024));
    expect(exact.truncated).toBe(false);
    expect(exact.msg.length).toBe(1024);

    const small = nextMessages(peer, 2);
    client.send(Buffer.from('0123456789abcdefXYZ'));
    client.send(Buffer.from('0123456789abcdef'));
    const [over, fits] = await small;
    expect([over.msg.toString(), over.truncated]).toEqual(['0123456789abcdef', true]);
    expect([fits.msg.toString(), fits.truncated]).toEqual(['0123456789abcdef', false]);
  });

  it('deliver the messages a peer queued before closing, then the close', async () => {
    const { client, peer } = await pair();
    const events: string[] = [];
    const closed = new Promise<void>((resolve) =>
      peer.onClose((err) => {
        events.push(`close ${err?.message ?? 'eof'}`);
        resolve();
      }),
    );
    peer.onMessage((msg) => events.push(msg.toString()));
    client.send(Buffer.from('one'));
    client.send(Buffer.from('two'));
    client.send(Buffer.from('three'));
    client.close();
    await closed;
    expect(events).toEqual(['one', 'two', 'three', 'close eof']);
    expect(peer.closed).toBe(true);
    // a close handler added afterwards still runs
    await new Promise<void>((resolve) => peer.onClose(() => resolve()));
  });

  it('throw EPIPE when sending to a peer that has gone, EBADF once the connection is closed', async () => {
    // the peer's socket is closed, our side has not read the end of stream yet: the kernel says EPIPE
    const q = await pair();
    q.client.close();
    let pipeErr: NativeIoError | undefined;
    try {
      q.peer.send(Buffer.from('x'));
    } catch (e) {
      pipeErr = e as NativeIoError;
    }
    expect(pipeErr).toBeInstanceOf(NativeIoError);
    expect(pipeErr!.code).toBe('EPIPE');
    expect(pipeErr!.errno).toBe(os.constants.errno.EPIPE);
    expect(pipeErr!.message).toContain(q.path);

    // reading the end of stream closed our side: sending is refused without touching the fd
    const p = await pair();
    p.peer.onMessage(() => undefined);
    const eofSeen = new Promise<void>((r) => p.peer.onClose(() => r()));
    p.client.close();
    await eofSeen;
    let err: NativeIoError | undefined;
    try {
      p.peer.send(Buffer.from('x'));
    } catch (e) {
      err = e as NativeIoError;
    }
    expect(err).toBeInstanceOf(NativeIoError);
    expect(err!.code).toBe('EBADF');
    expect(err!.message).toMatch(/seqpacket connection accepted on .*closed/);
  });

  it('throw EAGAIN instead of blocking when the peer does not read, and lose nothing', async () => {
    const { client, peer } = await pair();
    let sent = 0;
    let err: NativeIoError | undefined;
    for (let i = 0; i < 100000 && !err; i++) {
      try {
        peer.send(Buffer.alloc(100, i & 255));
        sent++;
      } catch (e) {
        err = e as NativeIoError;
      }
    }
    expect(err).toBeInstanceOf(NativeIoError);
    expect(err!.code).toBe('EAGAIN');
    expect(err!.message).toContain('receive queue is full');
    expect(sent).toBeGreaterThan(0);
    const all = await nextMessages(client, sent);
    expect(all.map((m) => m.msg[0])).toEqual(Array.from({ length: sent }, (_, i) => i & 255));
  });

  it('refuse empty messages, which the peer would read as the end of the stream', async () => {
    const { client } = await pair();
    expect(() => client.send(Buffer.alloc(0))).toThrow(/empty message/);
  });

  it('server close removes the socket path; connecting then fails with ENOENT', async () => {
    const { path: p, server } = await pair();
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    server.close();
    expect(fs.existsSync(p)).toBe(false);
    expect(() => SeqpacketConn.connect(p)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('listening replaces a stale socket file (as istio-cni does) but never another kind of file', async () => {
    const p = sockPath();
    const first = track(SeqpacketServer.listen(p, (c) => track(c)));
    let second: SeqpacketConn | undefined;
    const accepted = new Promise<void>((resolve) => {
      track(
        SeqpacketServer.listen(p, (c) => {
          second = track(c);
          resolve();
        }),
      );
    });
    track(SeqpacketConn.connect(p));
    await accepted;
    expect(second).toBeDefined();
    // the first server closing leaves the second one's file alone
    first.close();
    expect(fs.lstatSync(p).isSocket()).toBe(true);

    const file = path.join(dir, 'not-a-socket');
    fs.writeFileSync(file, 'keep me');
    expect(() => SeqpacketServer.listen(file, () => undefined)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
    expect(() => SeqpacketServer.listen(path.join(dir, 'x'.repeat(120)), () => undefined)).toThrow(/ENAMETOOLONG/);
  });
});

describe('the poller', () => {
  it('drives 1000 request/reply round trips with timers faked: readiness needs no timer', async () => {
    const { client, peer } = await pair();
    peer.onMessage((msg) => peer.send(msg)); // echo
    vi.useFakeTimers({
      toFake: ['setTimeout', 'setInterval', 'setImmediate', 'clearTimeout', 'clearInterval', 'clearImmediate'],
    });
    try {
      const replies: number[] = [];
      await new Promise<void>((resolve, reject) => {
        client.onClose((err) => reject(err ?? new Error('closed')));
        client.onMessage((msg) => {
          const n = msg.readUInt32LE(0);
          replies.push(n);
          if (n === 999) resolve();
          else client.send(Buffer.from(new Uint32Array([n + 1]).buffer));
        });
        client.send(Buffer.from(new Uint32Array([0]).buffer));
      });
      expect(replies).toEqual(Array.from({ length: 1000 }, (_, i) => i));
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('reports an fd again after its callback when data is left unread (one-shot, re-armed)', async () => {
    const { client, peer } = await pair();
    const io = loadIo();
    const buf = Buffer.alloc(64);
    const fdOut = new Int32Array(1);
    const flagsOut = new Int32Array(1);
    const read: string[] = [];
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      const unwatch = watch(peer.fd, () => {
        calls++;
        // one message per report, never draining
        const n = io.seqpacketRecv(peer.fd, buf, buf.length, fdOut, flagsOut);
        if (n > 0) read.push(buf.toString('utf8', 0, n));
        if (read.length === 3) {
          unwatch();
          resolve();
        }
      });
    });
    for (const m of ['a', 'b', 'c']) client.send(Buffer.from(m));
    await done;
    expect(read).toEqual(['a', 'b', 'c']);
    expect(calls).toBe(3);
  });

  it('reports nothing after unwatch, and refuses a non-fd or an fd watched twice', async () => {
    expect(() => watch(-1, () => undefined)).toThrow(RangeError);
    const { client, peer } = await pair();
    let calls = 0;
    const unwatch = watch(peer.fd, () => calls++);
    expect(() => watch(peer.fd, () => undefined)).toThrow(/watched already/);
    client.send(Buffer.from('x'));
    unwatch(); // before the loop could deliver the report
    unwatch(); // idempotent
    // a round trip through the poller on another fd: a report for the first, if any, came before
    const { client: c2, peer: p2 } = await pair();
    const one = nextMessages(p2, 1);
    c2.send(Buffer.from('y'));
    await one;
    expect(calls).toBe(0);
  });

  it('ignores a report written for an earlier watch of the same fd (tags tell them apart)', async () => {
    const io = loadIo();
    const buf = Buffer.alloc(16);
    const fdOut = new Int32Array(1);
    const flagsOut = new Int32Array(1);
    const flush = await pair();
    flush.peer.onMessage((m) => flush.peer.send(m));
    let stale = 0;
    for (let round = 0; round < 20; round++) {
      const { client, peer } = await pair();
      const unwatchOld = watch(peer.fd, () => stale++);
      client.send(Buffer.from('x')); // the thread reports peer.fd while this code runs on
      unwatchOld();
      expect(io.seqpacketRecv(peer.fd, buf, buf.length, fdOut, flagsOut)).toBe(1); // nothing left to read
      const unwatchNew = watch(peer.fd, () => stale++);
      // one round trip through the poller: a report written before the unwatch arrives first
      const echoed = nextMessages(flush.client, 1);
      flush.client.send(Buffer.from('flush'));
      await echoed;
      unwatchNew();
    }
    expect(stale).toBe(0);
  });

  it('closePoller stops its thread and releases its fds; watching again restarts it', async () => {
    closePoller();
    const fdsBefore = openFds();
    expect(pollerThreads()).toBe(0);
    {
      const { client, peer } = await pair();
      const got = nextMessages(peer, 1);
      client.send(Buffer.from('up'));
      await got;
      expect(pollerThreads()).toBe(1);
      for (const x of opened.splice(0)) x.close();
    }
    closePoller();
    expect(pollerThreads()).toBe(0);
    expect(watchedCount()).toBe(0);
    expect([...openFds().keys()].sort()).toEqual([...fdsBefore.keys()].sort());

    const { client, peer } = await pair();
    const got = nextMessages(peer, 1);
    client.send(Buffer.from('again'));
    expect((await got)[0].msg.toString()).toBe('again');
  });

  for (const mode of ['close-all', 'close-poller', 'stop-listening']) {
    it(`lets a process exit by itself (${mode})`, async () => {
      const p = sockPath();
      const res = await run([TSX, path.join(ROOT, 'test/unit/fixtures/native-io-exit.ts'), p, mode], {
        timeoutMs: 30000,
        allowFail: true,
      });
      expect({ code: res.code, stdout: res.stdout, stderr: res.stderr }).toEqual({ code: 0, stdout: 'done\n', stderr: '' });
      // the file goes with a closed server, and stays when the server was abandoned
      expect(fs.existsSync(p)).toBe(mode === 'stop-listening');
    });
  }
});

describe('stress', () => {
  it('50 clients × 100 request/reply messages each: all echoed in order, no fd left open', async () => {
    // the poller's own fds exist before and after: start it first
    const warm = await pair();
    const one = nextMessages(warm.peer, 1);
    warm.client.send(Buffer.from('warm'));
    await one;
    for (const x of opened.splice(0)) x.close();

    const before = openFds();
    const watchedBefore = watchedCount();
    const p = sockPath();
    const serverSide: Promise<void>[] = [];
    const server = SeqpacketServer.listen(p, (conn) => {
      serverSide.push(new Promise((resolve) => conn.onClose(() => resolve())));
      conn.onMessage((msg) => conn.send(msg));
    });
    const clients = Array.from({ length: 50 }, (_, c) => {
      const conn = SeqpacketConn.connect(p);
      return new Promise<number[]>((resolve, reject) => {
        const seen: number[] = [];
        conn.onClose((err) => reject(new Error(`client ${c} closed after ${seen.length}: ${err?.message ?? 'eof'}`)));
        conn.onMessage((msg) => {
          expect(msg.readUInt16LE(0)).toBe(c);
          seen.push(msg.readUInt16LE(2));
          if (seen.length === 100) {
            conn.close();
            resolve(seen);
          } else {
            conn.send(Buffer.from(new Uint16Array([c, seen.length]).buffer));
          }
        });
        conn.send(Buffer.from(new Uint16Array([c, 0]).buffer));
      }).catch((e) => {
        conn.close();
        throw e;
      });
    });
    try {
      const results = await Promise.all(clients);
      for (const seen of results) expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => i));
      await Promise.all(serverSide); // every accepted side saw its client go
      expect(serverSide.length).toBe(50);
    } finally {
      server.close();
    }
    expect(watchedCount()).toBe(watchedBefore);
    const after = openFds();
    const leaked = [...after].filter(([n]) => !before.has(n));
    expect(leaked).toEqual([]);
    expect(after.size).toBe(before.size);
  });
});

describe('address watch', () => {
  let node: SimNode;
  beforeAll(async () => {
    node = await createNode({ ipv6: true });
  });
  afterAll(async () => {
    await node?.destroy();
  });

  interface Line {
    event: string;
    overrun?: boolean;
    addresses?: string[];
  }

  /** Runs test/tools/addr-watch.ts in the node's namespace; waitFor() looks at lines after the last one it matched. */
  function startWatcher(args: string[] = []) {
    const child = node.spawn([TSX, path.join(ROOT, 'test/tools/addr-watch.ts'), ...args]);
    const lines: Line[] = [];
    let partial = '';
    let wake: (() => void) | undefined;
    child.stdout!.on('data', (d: string | Buffer) => {
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const l of parts) if (l.startsWith('{')) lines.push(JSON.parse(l) as Line);
      wake?.();
    });
    child.on('close', () => wake?.());
    let cursor = 0;
    const waitFor = async (what: string, pred: (l: Line) => boolean): Promise<Line> => {
      const deadline = Date.now() + 20000;
      for (;;) {
        while (cursor < lines.length) {
          const l = lines[cursor++];
          if (pred(l)) return l;
        }
        const out = node.output(child);
        if (out.exited || Date.now() > deadline) {
          throw new Error(
            `no line for ${what} (${out.exited ? `watcher exited ${out.exitCode}` : 'timed out'}): ` +
              `stdout ${out.stdout.slice(-4000)} stderr ${out.stderr.slice(-4000)}`,
          );
        }
        // the next line, or the deadline
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, deadline - Date.now() + 1);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    };
    return { child, waitFor };
  }

  it('calls back when an address is added to or removed from an interface of the namespace', async () => {
    const w = startWatcher();
    await w.waitFor('ready', (l) => l.event === 'ready');
    // no dummy driver in this kernel: a veth pair, both ends inside the node's namespace
    await node.exec(['ip', 'link', 'add', 'sltw0', 'type', 'veth', 'peer', 'name', 'sltw1']);
    await node.exec(['ip', 'link', 'set', 'sltw0', 'up']);
    await node.exec(['ip', 'link', 'set', 'sltw1', 'up']);
    await node.exec(['ip', 'addr', 'add', '10.254.7.1/24', 'dev', 'sltw0']);
    await w.waitFor('10.254.7.1 added', (l) => l.event === 'change' && !!l.addresses?.includes('10.254.7.1'));
    await node.exec(['ip', 'addr', 'add', 'fd00:254:7::1/64', 'dev', 'sltw0', 'nodad']);
    await w.waitFor('fd00:254:7::1 added', (l) => l.event === 'change' && !!l.addresses?.includes('fd00:254:7::1'));
    await node.exec(['ip', 'addr', 'del', '10.254.7.1/24', 'dev', 'sltw0']);
    const gone = await w.waitFor('10.254.7.1 removed', (l) => l.event === 'change' && !l.addresses?.includes('10.254.7.1'));
    expect(gone.addresses).toContain('fd00:254:7::1');
    expect(gone.overrun).toBe(false);
    await node.exec(['ip', 'link', 'del', 'sltw0']);
    await w.waitFor('the veth gone', (l) => l.event === 'change' && !l.addresses?.includes('fd00:254:7::1'));
  });

  it('reports an overrun of its receive buffer as a change with overrun: true', async () => {
    const hostIno = String(fs.statSync('/proc/self/ns/net').ino);
    const w = startWatcher(['--rcvbuf', '1', '--burst', '300', '--host-netns-ino', hostIno]);
    const line = await w.waitFor('the burst seen', (l) => l.event === 'change' && !!l.addresses?.includes('10.255.1.43'));
    expect(line.overrun).toBe(true);
  });
});
