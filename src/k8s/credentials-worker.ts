/* Worker thread: resolves API-server credentials with @kubernetes/client-node's KubeConfig (every
 * kubeconfig form it knows: certificates, tokens, exec and auth-provider plugins, in-cluster), and
 * posts back plain values. The worker then exits, and the ~60 MiB the library occupies once loaded
 * go with it instead of staying in the node agent for its lifetime.
 */
import * as https from 'node:https';
import { parentPort, workerData } from 'node:worker_threads';
import { KubeConfig } from '@kubernetes/client-node';

interface Request {
  kubeconfig?: string;
  server?: string;
}

async function resolve(req: Request) {
  const kc = new KubeConfig();
  if (req.kubeconfig) kc.loadFromFile(req.kubeconfig);
  else kc.loadFromCluster();
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`Cannot find the API server: no current cluster in ${req.kubeconfig ?? 'the in-cluster configuration'}`);
  const opts: https.RequestOptions = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  const text = (v: unknown) => (v === undefined || v === null ? undefined : Buffer.isBuffer(v) ? v.toString('utf8') : String(v));
  return {
    server: req.server || cluster.server,
    ca: text(opts.ca),
    cert: text(opts.cert),
    key: text(opts.key),
    rejectUnauthorized: opts.rejectUnauthorized !== false,
    authorization: (opts.headers as Record<string, string> | undefined)?.Authorization,
    user: kc.getCurrentUser()?.name,
  };
}

resolve(workerData as Request).then(
  (creds) => parentPort!.postMessage({ ok: true, creds }),
  (e: Error) => parentPort!.postMessage({ ok: false, error: e.message }),
);
