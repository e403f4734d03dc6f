/* The rendered deploy objects as deploy.test.ts (kustomize) and helm.test.ts (the chart) read
 * them: rendering the kustomize tree, finding one object, throwaway directories, and the checks of
 * objects against the Kubernetes API schemas and types (kubernetes-models).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAll } from 'js-yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { afterAll, expect } from 'vitest';

export const ROOT = path.resolve(__dirname, '../..');

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: any;
};

/** The objects `kubectl kustomize deploy/<dir>` renders. */
export function kustomize(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', path.join(ROOT, 'deploy', dir)], { encoding: 'utf8' });
  return (loadAll(out) as Obj[]).filter(Boolean);
}

/** The one object of that kind and name (the test fails unless there is exactly one). */
export function one(objs: Obj[], kind: string, name: string): Obj {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name === name);
  expect(found, `${kind}/${name}`).toHaveLength(1);
  return found[0];
}

/**
 * A maker of temporary directories, all removed after the test file. Call it at the top level
 * of a test file (it registers the afterAll hook).
 */
export function tmpDirMaker(): (prefix: string) => string {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
  return (prefix) => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}

/** The kubernetes-models class of each kind the deploy trees render (the ServiceMonitor, a CRD, has none). */
const MODELS: Record<string, { new (data: any): { validate(): void } }> = {
  Namespace,
  ServiceAccount,
  ConfigMap,
  DaemonSet,
  ClusterRole,
  ClusterRoleBinding,
  Service,
};
const TYPES: Record<string, [module: string, iface: string]> = {
  Namespace: ['kubernetes-models/v1/Namespace', 'INamespace'],
  ServiceAccount: ['kubernetes-models/v1/ServiceAccount', 'IServiceAccount'],
  ConfigMap: ['kubernetes-models/v1/ConfigMap', 'IConfigMap'],
  DaemonSet: ['kubernetes-models/apps/v1/DaemonSet', 'IDaemonSet'],
  ClusterRole: ['kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole', 'IClusterRole'],
  ClusterRoleBinding: ['kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding', 'IClusterRoleBinding'],
  Service: ['kubernetes-models/v1/Service', 'IService'],
};

/** Every object validates with its kubernetes-models class; `label` names an object in a failure. */
export function expectSchemaValid(objs: Obj[], label: (o: Obj) => string): void {
  for (const o of objs) {
    const Model = MODELS[o.kind];
    expect(Model, o.kind).toBeDefined();
    expect(() => new Model(o).validate(), label(o)).not.toThrow();
  }
}

/**
 * No object has a field the API types lack: each is type-checked by tsc against its
 * kubernetes-models interface, in a file under `dir` (a throwaway directory).
 */
export function expectNoUnknownFields(objs: Obj[], dir: string): void {
  // kubernetes-models' validate() allows unknown fields; TypeScript's excess-property check on
  // the same types does not.
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const lines: string[] = [];
  objs.forEach((o, i) => {
    const [mod, iface] = TYPES[o.kind];
    lines.push(`import type { ${iface} as T${i} } from '${mod}';`, `export const o${i}: T${i} = ${JSON.stringify(o)};`);
  });
  fs.writeFileSync(path.join(dir, 'check.ts'), lines.join('\n') + '\n');
  const r = spawnSync(
    process.execPath,
    [
      path.join(ROOT, 'node_modules/typescript/bin/tsc'),
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--module',
      'commonjs',
      '--moduleResolution',
      'node',
      '--target',
      'es2022',
      '--types',
      'node',
      path.join(dir, 'check.ts'),
    ],
    { encoding: 'utf8', cwd: dir },
  );
  expect(r.stdout + r.stderr).toBe('');
  expect(r.status).toBe(0);
}
