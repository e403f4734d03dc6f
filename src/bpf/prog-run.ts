/* BPF_PROG_TEST_RUN: a loaded program run once on input the caller builds, without attaching it
 * anywhere (the decision tests under test/bpf use it; cilium/ebpf calls it Program.Run).
 */
import { checkErrno, loadShim } from './shim';

export interface RunInput {
  /** the packet, for program types that run on one (tc: at least an Ethernet header, 14 bytes) */
  data?: Buffer;
  /** the context struct, for program types that take one; the kernel's copy back is written into it */
  ctx?: Buffer;
}

/** Runs the program whose fd is given once (`what` names it in errors); returns what it returned. */
export function runProgram(progFd: number, what: string, input: RunInput): number {
  const retval = new Uint32Array(1);
  const { data, ctx } = input;
  // the shim knows the fd only: the program is named here, the errno says why
  checkErrno(
    loadShim().progTestRun(progFd, data ?? null, data?.length ?? 0, ctx ?? null, ctx?.length ?? 0, retval),
    `test run of ${what}`,
  );
  return retval[0] | 0;
}
