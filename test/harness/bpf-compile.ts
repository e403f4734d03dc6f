/* Compiles one eBPF C file as the Makefile compiles the programs (BPF_CFLAGS): what the tests that
 * build a variant object (edited headers, a snippet declaring a struct, an older release's
 * globals) use, so their objects differ from the shipped ones only by what the test edits.
 */
import { execFileSync } from 'node:child_process';

let arch: string | undefined;

/** clang -O2 -g -Wall -Werror -target bpf; throws with clang's output when it fails. */
export function compileBpf(src: string, out: string, timeoutMs = 60_000): void {
  arch ??= execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  execFileSync(
    'clang',
    ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`, '-c', src, '-o', out],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    },
  );
}
