/* Child process: resolves API-server credentials with @kubernetes/client-node's KubeConfig (every
 * kubeconfig form it knows: certificates, tokens, exec and auth-provider plugins, in-cluster), and
 * sends back plain values. It then exits, and the ~60 MiB the library occupies once loaded go with
 * it (a worker thread left ~20 MiB behind in the agent) instead of staying for the agent's life.
 */
import type * as https from 'node:https';
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
  if (!cluster)
    throw new Error(`Cannot find the API server: no current cluster in ${req.kubeconfig ?? 'the in-cluster configuration'}`);
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

process.once('message', (req: Request) => {
  resolve(req).then(
    (creds) => process.send!({ ok: true, creds }, () => process.exit(0)),
    (e: Error) => process.send!({ ok: false, error: e.message }, () => process.exit(0)),
  );
});
