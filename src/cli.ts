/* The sluice command line: `sluice <command> [--config FILE] [-o json]`. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadConfig, loadConfigDir, parseConfig, type Config } from './config';
import { setLogLevel } from './log';
import type { AgentStatus } from './agent/agent';
import type { FilterArgs } from './monitor/filter';

const USAGE = `usage: sluice <command> [--config FILE | --config-dir DIR] [-o json]

commands:
  agent              run the node agent (loads, attaches and keeps the datapath in step)
  status             exit 0 when the agent is ready (programs attached, first sync done);
                     --alive: exit 0 when it answers at all (liveness)
  bpf lb list        services and backends as the pinned maps hold them (works while the agent is down)
  bpf lb counters    datapath counters (summed over CPUs), and captured handshakes in flight
  bpf migrate        with the agent stopped: load the objects of --object-dir DIR (default: this
                     release's) over the pinned maps as the agent does at start, migrating the
                     maps whose layout or size differs; before a downgrade, DIR is the older
                     release's build/bpf (see deploy/README.md)
  endpoint list      registered pods: IPs, namespace/name, mode=…, netns cookie, container (-o json)
  doctor             check what is: kernel, programs and their settings, maps vs the model, CNI
                     chain, pods' capture, Cilium/Istio checklist; one line per check, exit 1 on a fail
  monitor            the datapath's decisions, live, one line each (until Ctrl-C); filters:
                     --pod NAMESPACE/NAME|host, --namespace NS, --type T[,T] (lb-translate,
                     lb-refuse, capture-out, capture-in, bypass-out, bypass-in, no-listener,
                     sock-destroy); -o json
  uninstall          remove sluice's CNI entry and binary, detach every program, remove every pin

--config FILE: a YAML map of keys (or a ConfigMap manifest); --config-dir DIR: a mounted
ConfigMap, one file per key. Without either, /etc/sluice/config.yaml when it exists, else the
built-in defaults.
`;

const DEFAULT_CONFIG_FILE = '/etc/sluice/config.yaml';

interface Args {
  words: string[];
  config?: string;
  configDir?: string;
  output: 'text' | 'json';
  /** status --alive: only whether the agent answers (a liveness probe) */
  alive?: boolean;
  /** bpf migrate --object-dir */
  objectDir?: string;
  /** monitor --pod, --namespace, --type */
  filter: FilterArgs;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { words: [], output: 'text', filter: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') args.config = argv[++i];
    else if (a.startsWith('--config=')) args.config = a.slice(9);
    else if (a === '--config-dir') args.configDir = argv[++i];
    else if (a.startsWith('--config-dir=')) args.configDir = a.slice(13);
    else if (a === '-o' || a === '--output') args.output = argv[++i] === 'json' ? 'json' : 'text';
    else if (a === '--alive') args.alive = true;
    else if (a === '--object-dir') args.objectDir = argv[++i];
    else if (a.startsWith('--object-dir=')) args.objectDir = a.slice(13);
    else if (a === '--pod' || a === '--namespace' || a === '--type')
      args.filter[a.slice(2) as keyof FilterArgs] = argv[++i] ?? '';
    else if (/^--(pod|namespace|type)=/.test(a))
      args.filter[a.slice(2, a.indexOf('=')) as keyof FilterArgs] = a.slice(a.indexOf('=') + 1);
    else if (a === '-h' || a === '--help') args.words.unshift('help');
    else args.words.push(a);
  }
  return args;
}

function config(args: Args): Config {
  if (args.config) return loadConfig(args.config);
  if (args.configDir) return loadConfigDir(args.configDir);
  if (fs.existsSync(DEFAULT_CONFIG_FILE)) return loadConfig(DEFAULT_CONFIG_FILE);
  return parseConfig({});
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const cmd = args.words.join(' ');
  switch (cmd) {
    case 'agent': {
      const cfg = config(args);
      setLogLevel(cfg.logLevel);
      const { runAgent } = await import('./agent/agent');
      await runAgent(cfg);
      return -1; // keeps running until a signal
    }
    case 'status': {
      const cfg = config(args);
      const { callAgent } = await import('./agent/local-api');
      try {
        const st = (await callAgent(cfg.agentSocket, { op: 'status' })) as Pick<
          AgentStatus,
          'ready' | 'reason' | 'phase' | 'datapath'
        >;
        if (args.output === 'json') process.stdout.write(JSON.stringify(st, null, 2) + '\n');
        else {
          process.stdout.write(st.ready ? `ready: ${st.reason}\n` : `not ready (${st.phase}): ${st.reason}\n`);
          // what this node's kernel lets the agent do about sockets left on removed backends
          const destroy = st.datapath?.sockDestroy;
          if (destroy)
            process.stdout.write(`socket destroy: ${destroy === 'available' ? 'available' : `unavailable: ${destroy}`}\n`);
        }
        if (args.alive) return st.phase === 'failed' ? 1 : 0;
        return st.ready ? 0 : 1;
      } catch (e) {
        process.stdout.write(`not ready: ${(e as Error).message}\n`);
        return 1;
      }
    }
    case 'bpf lb list': {
      const cfg = config(args);
      const { listLbServices, formatLbList } = await import('./lb/list');
      const services = listLbServices(cfg.bpfPinDir);
      process.stdout.write(args.output === 'json' ? JSON.stringify(services, null, 2) + '\n' : formatLbList(services));
      return 0;
    }
    case 'bpf lb counters': {
      const cfg = config(args);
      const { LbMaps } = await import('./lb/maps');
      const { readOrigdstStat } = await import('./mesh/maps');
      const maps = LbMaps.open(cfg.bpfPinDir);
      const handshakes = readOrigdstStat(cfg.bpfPinDir);
      // capture_handshakes is a level (captured handshakes in flight now), the rest are counts
      const counters = {
        ...maps.readCounters(),
        capture_handshakes: Number(handshakes.inFlight),
        capture_full: Number(handshakes.refused),
      };
      maps.close();
      if (args.output === 'json') process.stdout.write(JSON.stringify(counters, null, 2) + '\n');
      else {
        const width = Math.max(...Object.keys(counters).map((k) => k.length)) + 2;
        for (const [k, v] of Object.entries(counters)) process.stdout.write(`${k.padEnd(width)}${v}\n`);
      }
      return 0;
    }
    case 'bpf migrate': {
      const cfg = config(args);
      const { callAgent } = await import('./agent/local-api');
      const running = await callAgent(cfg.agentSocket, { op: 'status' }, 1000).then(
        () => true,
        () => false,
      );
      if (running) {
        process.stderr.write(
          `sluice: the agent answers on ${cfg.agentSocket}: stop it before "bpf migrate" (it would load its own objects again)\n`,
        );
        return 1;
      }
      const { netnsCookieSelf } = await import('./bpf');
      const { datapathOptions, installDatapath } = await import('./datapath');
      const objectDir = args.objectDir && path.resolve(args.objectDir);
      // --object-dir names another release's objects (a downgrade): settings they lack are theirs to lack
      const { migration, skipped } = installDatapath({
        ...datapathOptions(cfg, netnsCookieSelf(), objectDir),
        objectRelease: objectDir ? 'other' : 'this',
      });
      for (const s of skipped)
        process.stderr.write(`sluice: ${s} is not in the objects of ${objectDir}: left as that release compiled it\n`);
      const { formatMigration } = await import('./migration-report');
      process.stdout.write(args.output === 'json' ? JSON.stringify(migration, null, 2) + '\n' : formatMigration(migration));
      return 0;
    }
    case 'endpoint list': {
      const cfg = config(args);
      const { listPodRegistrations, formatPodRegistrationList } = await import('./agent/pod-registration-list');
      const regs = listPodRegistrations(cfg.stateDir, cfg.bpfPinDir);
      process.stdout.write(args.output === 'json' ? JSON.stringify(regs, null, 2) + '\n' : formatPodRegistrationList(regs));
      return 0;
    }
    case 'doctor': {
      const cfg = config(args);
      const { runDoctor, formatReport, exitCode } = await import('./doctor');
      const report = await runDoctor(cfg);
      process.stdout.write(args.output === 'json' ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
      return exitCode(report);
    }
    case 'monitor': {
      const { parseFilter } = await import('./monitor/filter');
      try {
        parseFilter(args.filter); // the agent checks again; a usage error is the command line's
      } catch (e) {
        process.stderr.write(`sluice: ${(e as Error).message}\n`);
        return 2;
      }
      const cfg = config(args);
      const { runMonitor } = await import('./monitor/client');
      return runMonitor(cfg.agentSocket, args.filter, { output: args.output });
    }
    case 'uninstall': {
      const cfg = config(args);
      const { uninstall } = await import('./uninstall');
      for (const line of uninstall(cfg)) process.stdout.write(line + '\n');
      return 0;
    }
    case 'help':
    case '':
      process.stdout.write(USAGE);
      return cmd === 'help' ? 0 : 2;
    default:
      process.stderr.write(`sluice: unknown command "${cmd}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`sluice: ${e.message}\n`);
    process.exitCode = 1;
  },
);
