/*
 * vitest globalSetup for kernel tests: sweeps leftovers of crashed runs and
 * makes sure bpffs is mounted before any test file runs; sweeps again at the end.
 */

import { ensureBpffs, sweepStale } from './cleanup';

export async function setup(): Promise<void> {
  await sweepStale();
  ensureBpffs();
}

export async function teardown(): Promise<void> {
  await sweepStale();
}
