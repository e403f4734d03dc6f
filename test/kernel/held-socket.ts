/* A client socket kept open across a datapath change (sl-probe hold): what getpeername() and the
 * source of replies say afterwards shows whether the socket's reverse translation survived.
 */
import type { ChildProcess } from 'node:child_process';
import { waitFor, type SimPod } from '../harness';
import { PROBE, type LbEnv } from './lb-env';

export interface HeldReply {
  ok: boolean;
  reply?: string;
  /** getpeername() */
  peer?: string;
  /** UDP: the source address of the reply */
  from?: string;
  stage?: string;
}

export interface HeldSocket {
  /** the answer to the connect */
  first: HeldReply;
  /** asks the socket again (UDP: one more datagram on the same connected socket) */
  ask(): Promise<HeldReply>;
  close(): void;
}

function replies(env: LbEnv, child: ChildProcess): HeldReply[] {
  return env.node
    .output(child)
    .stdout.split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as HeldReply);
}

export async function holdSocket(
  env: LbEnv,
  from: SimPod,
  proto: 'tcp' | 'udp',
  addr: string,
  port: number,
): Promise<HeldSocket> {
  const child = env.node.spawn(
    [PROBE, 'hold', '--proto', proto, '--addr', addr, '--port', String(port), '--timeout-ms', '2000'],
    { netnsPath: from.netnsPath },
  );
  const first = await waitFor(`held ${proto} socket to ${addr}:${port}`, () => {
    const out = env.node.output(child);
    if (out.exited && replies(env, child).length === 0) throw new Error(`sl-probe hold exited: ${out.stderr}`);
    return replies(env, child)[0];
  });
  if (!first.ok) throw new Error(`held ${proto} socket to ${addr}:${port} failed at ${first.stage}`);
  let asked = 1;
  return {
    first,
    async ask() {
      const n = ++asked;
      child.stdin!.write('again\n');
      return waitFor(`held socket answer #${n}`, () => replies(env, child)[n - 1]);
    },
    close() {
      child.stdin!.end();
    },
  };
}
