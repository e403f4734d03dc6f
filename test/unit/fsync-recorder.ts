/* node:fs with fsyncSync recording what it is called on (the path behind the fd), for tests of
 * durable writes: `vi.mock('node:fs', async (importOriginal) =>
 * (await import('./fsync-recorder')).recordingFsync(await importOriginal(), hooks))`, hooks from
 * vi.hoisted (vi.mock factories run before the test file's imports).
 */
export function recordingFsync(real: typeof import('node:fs'), hooks: { fsynced: string[] }): typeof import('node:fs') {
  return {
    ...real,
    fsyncSync: (fd: number) => {
      hooks.fsynced.push(real.readlinkSync(`/proc/self/fd/${fd}`));
      return real.fsyncSync(fd);
    },
  };
}
