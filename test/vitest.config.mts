import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Kernel tests create namespaces, cgroups and pins: run files in separate processes, a few at a
// time (2 cores here), and sweep leftovers of crashed runs before and after.
export default defineConfig({
  test: {
    root: fileURLToPath(new URL('..', import.meta.url)),
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/harness/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60000,
    hookTimeout: 60000,
  },
});
