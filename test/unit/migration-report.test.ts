/* `sluice bpf migrate` text output: one line per map, the reason and what was carried. */
import { expect, test } from 'vitest';
import { formatMigration } from '../../src/migration-report';

test('each map on one line: action, why, converter, entries, fields, what was lost', () => {
  const text = formatMigration([
    {
      map: 'sl_lb_svc',
      action: 'migrated',
      reason: 'value size 12 → 16, value layout',
      converter: 'by-field',
      entries: 9,
      copied: 9,
      added: ['weight'],
    },
    {
      map: 'sl_lb_affinity',
      action: 'migrated',
      reason: 'value layout',
      converter: 'by-field',
      entries: 3,
      copied: 3,
      caughtUp: 1,
    },
    { map: 'sl_cap_sock', action: 'rebuilt', reason: 'value layout', lost: 'live sockets lose their original destination' },
    { map: 'sl_endpoints', action: 'reused' },
    { map: 'sl_old', action: 'removed', from: 'hash key 4B value 8B max 64 flags 0x0 layout 0123456789ab' },
  ]);
  expect(text.split('\n')).toEqual([
    'sl_lb_svc       migrated: value size 12 → 16, value layout; converter by-field; 9 of 9 entries copied; added weight',
    'sl_lb_affinity  migrated: value layout; converter by-field; 3 of 3 entries copied; 1 added meanwhile copied after the swap',
    'sl_cap_sock     rebuilt: value layout; lost: live sockets lose their original destination',
    'sl_endpoints    reused',
    'sl_old          removed: hash key 4B value 8B max 64 flags 0x0 layout 0123456789ab',
    '',
  ]);
});
