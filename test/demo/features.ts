/* Which of the parts being built in parallel (sluice doctor, sluice monitor, the metrics endpoint)
 * this build has: the demo runs a step when its command is listed by `sluice --help` or its config
 * key is in CONFIG_KEYS, and says "(not in this build)" otherwise. Read from the build itself, so
 * the demo follows what is merged without edits.
 */
import { CONFIG_KEYS } from '../../src/config';
import { run } from '../harness';

export interface BuildFeatures {
  /** commands as `sluice --help` spells them ("agent", "bpf lb list", "doctor", …) */
  commands: Set<string>;
  /** config keys the agent reads */
  configKeys: Set<string>;
}

/**
 * The commands of a `sluice --help` text: in its "commands:" section, each line that starts with
 * two spaces and a word, up to the first run of two spaces (continuation lines are indented
 * further and skipped).
 */
export function commandsFromHelp(help: string): string[] {
  const lines = help.split('\n');
  const start = lines.findIndex((l) => /^commands:\s*$/.test(l));
  if (start < 0) return [];
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === '') break;
    const m = /^ {2}(\S(?:\S| (?! ))*)/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

export async function detectFeatures(sluiceBin: string): Promise<BuildFeatures> {
  const help = await run([sluiceBin, '--help'], { allowFail: true });
  const commands = commandsFromHelp(help.stdout + help.stderr);
  if (!commands.includes('agent')) {
    throw new Error(
      `Cannot read the command list of ${sluiceBin} --help (exit ${help.code}): no "agent" in ${JSON.stringify(commands)}`,
    );
  }
  return { commands: new Set(commands), configKeys: new Set(CONFIG_KEYS) };
}
