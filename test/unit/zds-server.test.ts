/* The ZDS server's protocol mechanics over real SOCK_SEQPACKET sockets: hello, snapshot, one
 * request outstanding, newest connection for adds, all connections for dels, deadlines, keep for
 * a netns that cannot be opened, nack/retry in the per-pod hand-off. The peer here is a minimal
 * scripted client; the kernel suite drives the agent with an independent ztunnel stand-in.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AmbientZds, readZdsStates } from '../../src/mesh/ambient-zds';
import { decodeRequest, encodeAck, encodeHello, type WorkloadRequest } from '../../src/mesh/zds/messages';
import { NoZtunnelError, ZdsServer, type ZdsWorkload } from '../../src/mesh/zds/server';
import { SeqpacketConn, SeqpacketServer } from '../../src/native';
import { setLogLevel } from '../../src/log';

setLogLevel('error');

const listen = (p: string, on: (c: SeqpacketConn) => void) => SeqpacketServer.listen(p, on);

/** A scripted ztunnel: records every request (and whether an fd came with it), answers by rule. */
class Peer {
  readonly got: Array<{ req: WorkloadRequest; fdIno?: number }> = [];
  private waiters: Array<() => void> = [];
  closed = false;
  constructor(
    readonly conn: SeqpacketConn,
    private readonly answer: (r: WorkloadRequest) => string | null = () => '',
  ) {
    conn.onMessage((msg, fd) => {
      let fdIno: number | undefined;
      if (fd !== undefined) {
        fdIno = fs.fstatSync(fd).ino;
        fs.closeSync(fd);
      }
      const req = decodeRequest(msg);
      this.got.push({ req, fdIno });
      const a = this.answer(req);
      if (a !== null) conn.send(encodeAck(a));
      for (const w of this.waiters.splice(0)) w();
    });
    conn.onClose(() => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async connect(p: string, answer?: (r: WorkloadRequest) => string | null): Promise<Peer> {
    const peer = new Peer(SeqpacketConn.connect(p), answer);
    peer.conn.send(encodeHello());
    return peer;
  }
  kinds(): string[] {
    return this.got.map((g) => Object.keys(g.req)[0]);
  }
  async until(pred: () => boolean, ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out; got ${JSON.stringify(this.kinds())}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

describe('ZDS server', () => {
  let dir: string;
  let sock: string;
  const close: Array<() => void> = [];
  const nsPath = '/proc/self/ns/net';
  const wl = (uid: string, netnsPath = nsPath): ZdsWorkload => ({
    uid,
    name: `p-${uid}`,
    namespace: 'ns',
    serviceAccount: 'sa',
    netnsPath,
  });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zds-'));
    sock = path.join(dir, 'ztunnel.sock');
  });
  afterEach(() => {
    for (const c of close.splice(0)) c();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function server(pods: ZdsWorkload[], opts: { deadlineMs?: number; results?: Array<[string, unknown]> } = {}): ZdsServer {
    const s = new ZdsServer({
      path: sock,
      listen,
      deadlineMs: opts.deadlineMs,
      snapshot: () => pods,
      onSnapshotResult: (uid, r) => opts.results?.push([uid, r]),
    });
    s.listen();
    close.push(() => s.close());
    return s;
  }

  it('replays every pod with its netns fd on hello, then SnapshotSent; a netns that cannot be opened is kept', async () => {
    const results: Array<[string, unknown]> = [];
    server([wl('a'), wl('b'), wl('gone', path.join(dir, 'no-such-netns'))], { results });
    const peer = await Peer.connect(sock, (r) => ('add' in r && r.add.uid === 'b' ? 'no room' : ''));
    close.push(() => peer.conn.close());
    await peer.until(() => peer.got.length === 4);
    expect(peer.kinds()).toEqual(['add', 'add', 'keep', 'snapshotSent']);
    const selfIno = fs.statSync(nsPath).ino;
    expect(peer.got[0]).toMatchObject({
      req: { add: { uid: 'a', workloadInfo: { name: 'p-a', namespace: 'ns', serviceAccount: 'sa' } } },
      fdIno: selfIno,
    });
    expect(peer.got[2]).toMatchObject({ req: { keep: { uid: 'gone' } }, fdIno: undefined });
    expect(peer.got[3].fdIno).toBeUndefined();
    expect(results).toEqual([
      ['a', { ok: true }],
      ['b', { ok: false, error: 'no room' }],
    ]);
  });

  it('sends one request at a time: the next waits for the ack of the previous', async () => {
    const s = server([]);
    const held: WorkloadRequest[] = [];
    const peer = await Peer.connect(sock, (r) => {
      if (!('add' in r)) return '';
      held.push(r);
      return null;
    });
    close.push(() => peer.conn.close());
    await peer.until(() => peer.kinds().includes('snapshotSent'));
    const first = s.add(wl('x'));
    const second = s.add(wl('y'));
    await peer.until(() => peer.got.length === 2);
    await new Promise((r) => setTimeout(r, 200));
    expect(peer.kinds()).toEqual(['snapshotSent', 'add']); // y not sent before x is answered
    peer.conn.send(encodeAck(''));
    expect(await first).toEqual({ ok: true });
    await peer.until(() => peer.got.length === 3);
    peer.conn.send(encodeAck('refused'));
    expect(await second).toEqual({ ok: false, error: 'refused' });
  });

  it('adds go to the newest ztunnel, dels to every ztunnel; no ztunnel is NoZtunnelError', async () => {
    const s = server([]);
    await expect(s.add(wl('early'))).rejects.toBeInstanceOf(NoZtunnelError);
    const old = await Peer.connect(sock);
    close.push(() => old.conn.close());
    await old.until(() => old.kinds().includes('snapshotSent'));
    const young = await Peer.connect(sock);
    close.push(() => young.conn.close());
    await young.until(() => s.status().every((c) => c.state === 'ready'));
    expect(s.status().map((c) => c.state)).toEqual(['ready', 'ready']);
    expect(await s.add(wl('n'))).toEqual({ ok: true });
    await s.del('n');
    expect(old.kinds()).toEqual(['snapshotSent', 'del']);
    expect(young.kinds()).toEqual(['snapshotSent', 'add', 'del']);
  });

  it('a request not answered within the deadline closes the connection and fails the request', async () => {
    const s = server([], { deadlineMs: 300 });
    const peer = await Peer.connect(sock, (r) => ('add' in r ? null : ''));
    close.push(() => peer.conn.close());
    await peer.until(() => peer.kinds().includes('snapshotSent'));
    await expect(s.add(wl('slow'))).rejects.toThrow(/no answer to add within 300 ms/);
    await peer.until(() => peer.closed);
    expect(s.status()).toEqual([]);
  });

  it('a connection that never says hello is closed after the deadline', async () => {
    const s = server([], { deadlineMs: 300 });
    const conn = SeqpacketConn.connect(sock);
    let closed = false;
    conn.onMessage(() => undefined);
    conn.onClose(() => (closed = true));
    close.push(() => conn.close());
    await new Promise((r) => setTimeout(r, 800));
    expect(closed).toBe(true);
    expect(s.status()).toEqual([]);
  });

  it('per pod: pending without ztunnel, acked from the snapshot, a nack retried until acked, del on release', async () => {
    let nacks = 2;
    const states: string[] = [];
    const zds = new AmbientZds({
      path: sock,
      listen,
      stateFile: path.join(dir, 'zds.json'),
      onState: (w, st) => states.push(`${w.uid}:${st.state}`),
    });
    close.push(() => zds.close());
    zds.start();
    zds.enrolled(wl('p1'));
    expect(zds.status('p1')?.state).toBe('pending');
    const peer = await Peer.connect(sock, (r) => ('add' in r && r.add.uid === 'p2' && nacks-- > 0 ? 'not yet' : ''));
    close.push(() => peer.conn.close());
    await peer.until(() => zds.status('p1')?.state === 'acked');
    zds.enrolled(wl('p2'));
    expect(await zds.waitForAnswer('p2', 3000)).toMatchObject({ state: 'nack', error: 'not yet', attempts: 1 });
    await peer.until(() => zds.status('p2')?.state === 'acked', 5000);
    expect(zds.status('p2')?.attempts).toBe(3);
    expect(states).toEqual(['p1:pending', 'p1:acked', 'p2:pending', 'p2:nack', 'p2:nack', 'p2:acked']);
    await zds.released('p2');
    expect(peer.kinds().at(-1)).toBe('del');
    await new Promise((r) => setImmediate(r));
    expect(Object.keys(readZdsStates(path.join(dir, 'zds.json')) ?? {})).toEqual(['p1']);
  });
});
