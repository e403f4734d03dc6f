/* Which optional steps the demo runs is read from `sluice --help`: the parser must find every
 * command, multi-word ones too, and nothing from the continuation lines or the footer.
 */
import { describe, expect, it } from 'vitest';
import { commandsFromHelp } from './features';

const HELP = `usage: sluice <command> [--config FILE | --config-dir DIR] [-o json]

commands:
  agent              run the node agent (loads, attaches and keeps the datapath in step)
  status             exit 0 when the agent is ready (programs attached, first sync done);
                     --alive: exit 0 when it answers at all (liveness)
  bpf lb list        services and backends as the pinned maps hold them (works while the agent is down)
  doctor             check what is: kernel, programs and their settings, maps vs the model, CNI
                     chain, pods' capture, Cilium/Istio checklist; one line per check, exit 1 on a fail
  uninstall          remove sluice's CNI entry and binary, detach every program, remove every pin

--config FILE: a YAML map of keys (or a ConfigMap manifest); --config-dir DIR: a mounted
  ConfigMap, one file per key.
`;

describe('commandsFromHelp', () => {
  it('lists each command of the commands section, multi-word ones whole', () => {
    expect(commandsFromHelp(HELP)).toEqual(['agent', 'status', 'bpf lb list', 'doctor', 'uninstall']);
  });

  it('finds no monitor in a build without it, and nothing without a commands section', () => {
    expect(commandsFromHelp(HELP)).not.toContain('monitor');
    expect(commandsFromHelp('usage: sluice <command>\n')).toEqual([]);
  });
});
