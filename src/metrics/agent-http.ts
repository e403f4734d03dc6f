/* The agent's HTTP endpoints: /metrics on prometheus-serve-addr (Cilium's key, off when empty)
 * and /healthz, /readyz on health-serve-addr (127.0.0.1:9968 by default: kubelet's httpGet
 * probes of a hostNetwork pod reach the node's loopback, nothing else needs them). They answer
 * from the agent's start, before the datapath is loaded, so that liveness holds during a long
 * first sync while readiness says what the agent waits for.
 */
import type { Config } from '../config';
import { log } from '../log';
import type { AgentMetrics } from './agent-metrics';
import { HttpEndpoint, type HttpAnswer } from './http-endpoint';

export interface AgentHealth {
  /** readiness for pods, the meaning of `sluice status` */
  readiness(): { ready: boolean; reason: string };
  /** false once the agent has failed for good (what `sluice status --alive` reports) */
  alive(): boolean;
}

const TEXT = 'text/plain; charset=utf-8';

/** /healthz: 200 while the agent answers (and has not failed), else 503. */
export function healthz(h: AgentHealth): HttpAnswer {
  return h.alive() ? { status: 200, contentType: TEXT, body: 'ok\n' } : { status: 503, contentType: TEXT, body: 'failed\n' };
}

/** /readyz: 200 with the reason when ready for pods, 503 with what is missing otherwise. */
export function readyz(h: AgentHealth): HttpAnswer {
  const r = h.readiness();
  return r.ready
    ? { status: 200, contentType: TEXT, body: `ready: ${r.reason}\n` }
    : { status: 503, contentType: TEXT, body: `not ready: ${r.reason}\n` };
}

export class AgentHttp {
  private constructor(
    private readonly metricsEndpoint?: HttpEndpoint,
    private readonly healthEndpoint?: HttpEndpoint,
  ) {}

  /** Listens on the configured addresses; rejects (and listens on neither) when one cannot be bound. */
  static async start(
    cfg: Pick<Config, 'prometheusServeAddr' | 'healthServeAddr'>,
    metrics: AgentMetrics,
    health: AgentHealth,
  ): Promise<AgentHttp> {
    let healthEndpoint: HttpEndpoint | undefined;
    if (cfg.healthServeAddr) {
      healthEndpoint = await HttpEndpoint.listen('health-serve-addr', cfg.healthServeAddr, {
        '/healthz': () => healthz(health),
        '/readyz': () => readyz(health),
      });
    }
    let metricsEndpoint: HttpEndpoint | undefined;
    if (cfg.prometheusServeAddr) {
      try {
        metricsEndpoint = await HttpEndpoint.listen('prometheus-serve-addr', cfg.prometheusServeAddr, {
          '/metrics': async () => ({ status: 200, contentType: metrics.contentType, body: await metrics.scrape() }),
        });
      } catch (e) {
        await healthEndpoint?.close();
        throw e;
      }
    }
    log.info('http endpoints listening', {
      metrics: metricsEndpoint?.address ?? 'off',
      health: healthEndpoint?.address ?? 'off',
    });
    return new AgentHttp(metricsEndpoint, healthEndpoint);
  }

  /** The bound addresses, "host:port" (`sluice status -o json` shows them). */
  addresses(): { metrics?: string; health?: string } {
    return { metrics: this.metricsEndpoint?.address, health: this.healthEndpoint?.address };
  }

  async close(): Promise<void> {
    await Promise.all([this.metricsEndpoint?.close(), this.healthEndpoint?.close()]);
  }
}
