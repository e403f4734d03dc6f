/* The agent as its local API answers (status, objects it holds). Every kernel-side check works
 * without it; a down agent is a warning, and the checks that would have asked it say what they
 * used instead.
 */
import { netnsCookieOf, netnsCookieSelf } from '../bpf';
import type { AgentStatus } from '../agent/agent';
import { callAgent } from '../agent/local-api';
import type { Config } from '../config';
import type { K8sObject } from '../k8s/types';
import { fail, ok, warn, type CheckResult } from './report';

const AGENT_TIMEOUT_MS = 3000;

export interface AgentFacts {
  socket: string;
  status?: AgentStatus;
  /** why the agent did not answer */
  error?: string;
  /**
   * The network-namespace cookie the programs must have been loaded with: the agent's (through
   * its pid), or this process's when the agent is down (doctor runs beside it, on the host).
   */
  hostNetnsCookie?: bigint;
  hostNetnsCookieFrom: 'agent' | 'doctor';
}

export async function gatherAgentFacts(cfg: Config): Promise<AgentFacts> {
  const facts: AgentFacts = { socket: cfg.agentSocket, hostNetnsCookieFrom: 'doctor' };
  try {
    facts.status = (await callAgent(cfg.agentSocket, { op: 'status' }, AGENT_TIMEOUT_MS)) as AgentStatus;
  } catch (e) {
    facts.error = (e as Error).message;
  }
  try {
    if (facts.status?.pid) {
      facts.hostNetnsCookie = netnsCookieOf(`/proc/${facts.status.pid}/ns/net`);
      facts.hostNetnsCookieFrom = 'agent';
    }
  } catch {
    /* another pid namespace: fall back to ours */
  }
  if (facts.hostNetnsCookie === undefined) {
    try {
      facts.hostNetnsCookie = netnsCookieSelf();
    } catch {
      /* kernel.netns_cookie reports it */
    }
  }
  return facts;
}

/** The agent's copy of one object (`Kind/namespace/name`), or undefined when it holds none. */
export async function agentObject<T extends K8sObject>(facts: AgentFacts, key: string): Promise<T | undefined> {
  if (!facts.status) return undefined;
  const obj = await callAgent(facts.socket, { op: 'object', key }, AGENT_TIMEOUT_MS);
  return (obj ?? undefined) as T | undefined;
}

export function judgeAgent(f: AgentFacts): CheckResult[] {
  if (!f.status) {
    return [
      warn(
        'agent',
        `agent down (${f.error}): the checks below read the kernel, the pins and the state dir only`,
        'start the agent (kubectl -n sluice-system get pods -l app.kubernetes.io/name=sluice -o wide; its log says why it stopped)',
      ),
    ];
  }
  const st = f.status;
  if (!st.ready)
    return [
      fail(
        'agent',
        `agent up (pid ${st.pid}) but not ready (${st.phase}): ${st.reason}`,
        'see the agent log; `sluice status -o json` for details',
      ),
    ];
  return [ok('agent', `agent up (pid ${st.pid}, since ${st.startedAt}), ready: ${st.reason}`)];
}
