import { describe, expect, test, vi } from 'vitest';
import { canonicalIp, computeFrontends, DEFAULT_AFFINITY_TIMEOUT_SEC } from '../../src/lb/model';
import type { Endpoint, EndpointPort, EndpointSlice, Service, ServicePort, ServiceSpec } from '../../src/k8s/types';

function svc(name: string, spec: ServiceSpec, namespace = 'shop'): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec };
}

let sliceCounter = 0;

function slice(
  service: string,
  endpoints: Endpoint[],
  ports: EndpointPort[],
  opts: { name?: string; namespace?: string; addressType?: EndpointSlice['addressType'] } = {},
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: opts.name ?? `${service}-${++sliceCounter}`,
      namespace: opts.namespace ?? 'shop',
      labels: { 'kubernetes.io/service-name': service },
    },
    addressType: opts.addressType ?? 'IPv4',
    endpoints,
    ports,
  };
}

const ready = (ip: string): Endpoint => ({ addresses: [ip], conditions: { ready: true } });
const http: ServicePort[] = [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'web' }];
const httpSlicePort: EndpointPort[] = [{ name: 'http', port: 8080, protocol: 'TCP' }];

function compute(services: Service[], slices: EndpointSlice[]) {
  const warnings: Array<{ msg: string; fields: Record<string, unknown> }> = [];
  const frontends = computeFrontends(services, slices, { warn: (msg, fields) => warnings.push({ msg, fields }) });
  return { frontends, warnings };
}

describe('computeFrontends', () => {
  test('builds one frontend per clusterIP and port with the ready backends', () => {
    const { frontends, warnings } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [slice('web', [ready('10.0.0.2'), ready('10.0.0.1')], httpSlicePort)],
    );
    expect(frontends).toEqual([
      {
        id: '10.96.0.10:80/TCP',
        service: 'shop/web',
        portName: 'http',
        ip: '10.96.0.10',
        port: 80,
        proto: 'TCP',
        family: 4,
        scope: 'clusterIP',
        backends: [
          { ip: '10.0.0.1', port: 8080 },
          { ip: '10.0.0.2', port: 8080 },
        ],
        stillServing: [],
        affinityTimeoutSec: 0,
        noLocalEndpoints: false,
        zoneSensitive: false,
      },
    ]);
    expect(warnings).toEqual([]);
  });

  test('resolves a named targetPort through the slice port of the same name', () => {
    const { frontends } = compute(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          ports: [
            { name: 'http', port: 80, targetPort: 'web' },
            { name: 'admin', port: 81, targetPort: 9000 },
          ],
        }),
      ],
      [
        slice(
          'web',
          [ready('10.0.0.1')],
          [
            { name: 'admin', port: 9000, protocol: 'TCP' },
            { name: 'http', port: 8080, protocol: 'TCP' },
          ],
        ),
      ],
    );
    expect(frontends.map((f) => [f.id, f.portName, f.backends])).toEqual([
      ['10.96.0.10:80/TCP', 'http', [{ ip: '10.0.0.1', port: 8080 }]],
      ['10.96.0.10:81/TCP', 'admin', [{ ip: '10.0.0.1', port: 9000 }]],
    ]);
  });

  test('matches an unnamed service port with the unnamed slice port', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }] })],
      [slice('web', [ready('10.0.0.1')], [{ port: 8080 }])],
    );
    expect(frontends[0].portName).toBe('');
    expect(frontends[0].backends).toEqual([{ ip: '10.0.0.1', port: 8080 }]);
  });

  test('uses different backend ports from different slices of one service', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [
        slice('web', [ready('10.0.0.1')], [{ name: 'http', port: 8080 }]),
        slice('web', [ready('10.0.0.2')], [{ name: 'http', port: 9090 }]),
      ],
    );
    expect(frontends[0].backends).toEqual([
      { ip: '10.0.0.1', port: 8080 },
      { ip: '10.0.0.2', port: 9090 },
    ]);
  });

  test('a slice without a matching port name or protocol contributes nothing', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [
        slice('web', [ready('10.0.0.1')], [{ name: 'other', port: 8080 }]),
        slice('web', [ready('10.0.0.2')], [{ name: 'http', port: 8080, protocol: 'UDP' }]),
        slice('web', [ready('10.0.0.3')], [{ name: 'http' }]),
      ],
    );
    expect(frontends[0].backends).toEqual([]);
  });

  test('excludes endpoints whose ready condition is false and keeps nil as ready', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [
        slice(
          'web',
          [
            { addresses: ['10.0.0.1'], conditions: { ready: false, serving: true, terminating: true } },
            { addresses: ['10.0.0.2'], conditions: {} },
            { addresses: ['10.0.0.3'] },
            { addresses: ['10.0.0.4'], conditions: { ready: true } },
          ],
          httpSlicePort,
        ),
      ],
    );
    expect(frontends[0].backends.map((b) => b.ip)).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.4']);
  });

  test('emits a frontend with no backends when nothing is ready', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http }), svc('lonely', { clusterIP: '10.96.0.11', ports: http })],
      [slice('web', [{ addresses: ['10.0.0.1'], conditions: { ready: false } }], httpSlicePort)],
    );
    expect(frontends.map((f) => [f.id, f.backends])).toEqual([
      ['10.96.0.10:80/TCP', []],
      ['10.96.0.11:80/TCP', []],
    ]);
  });

  test('uses only slices of the same namespace labelled with the service name', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [
        slice('web', [ready('10.0.0.1')], httpSlicePort, { namespace: 'other' }),
        slice('web2', [ready('10.0.0.2')], httpSlicePort),
        { ...slice('web', [ready('10.0.0.3')], httpSlicePort), metadata: { name: 'unlabelled', namespace: 'shop' } },
        slice('web', [ready('10.0.0.4')], httpSlicePort),
      ],
    );
    expect(frontends[0].backends.map((b) => b.ip)).toEqual(['10.0.0.4']);
  });

  test('uses the first address of an endpoint only', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [slice('web', [{ addresses: ['10.0.0.1', '10.0.0.9'] }], httpSlicePort)],
    );
    expect(frontends[0].backends).toEqual([{ ip: '10.0.0.1', port: 8080 }]);
  });

  test('deduplicates backends listed in several slices and sorts them numerically', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', ports: http })],
      [
        slice('web', [ready('10.0.0.10'), ready('10.0.0.9')], httpSlicePort),
        slice('web', [ready('10.0.0.9'), ready('9.0.0.1')], httpSlicePort),
      ],
    );
    expect(frontends[0].backends.map((b) => b.ip)).toEqual(['9.0.0.1', '10.0.0.9', '10.0.0.10']);
  });

  test('headless services contribute nothing, not even externalIPs', () => {
    const { frontends } = compute(
      [
        svc('headless', { clusterIP: 'None', clusterIPs: ['None'], externalIPs: ['192.0.2.1'], ports: http }),
        svc('unallocated', { clusterIP: '', ports: http }),
        svc('noip', { ports: http }),
      ],
      [slice('headless', [ready('10.0.0.1')], httpSlicePort)],
    );
    expect(frontends).toEqual([]);
  });

  test('ExternalName services contribute nothing', () => {
    const { frontends } = compute([svc('ext', { type: 'ExternalName', clusterIP: '10.96.0.10', ports: http })], []);
    expect(frontends).toEqual([]);
  });

  test('NodePort and LoadBalancer services contribute their clusterIPs', () => {
    const { frontends } = compute(
      [
        svc('np', { type: 'NodePort', clusterIP: '10.96.0.1', ports: http }),
        svc('lb', { type: 'LoadBalancer', clusterIP: '10.96.0.2', ports: http }),
      ],
      [],
    );
    expect(frontends.map((f) => `${f.service} ${f.id}`)).toEqual(['shop/np 10.96.0.1:80/TCP', 'shop/lb 10.96.0.2:80/TCP']);
  });

  test('externalIPs become frontends for every port with scope externalIP', () => {
    const { frontends } = compute(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          clusterIPs: ['10.96.0.10', 'fd00::10'],
          externalIPs: ['192.0.2.1', '2001:DB8::1'],
          ports: [...http, { name: 'dns', port: 53, protocol: 'UDP' }],
        }),
      ],
      [
        slice('web', [ready('10.0.0.1')], [...httpSlicePort, { name: 'dns', port: 5353, protocol: 'UDP' }]),
        slice('web', [ready('fd00::1')], [...httpSlicePort, { name: 'dns', port: 5353, protocol: 'UDP' }], {
          addressType: 'IPv6',
        }),
      ],
    );
    expect(frontends.map((f) => [f.id, f.scope, f.family, f.backends])).toEqual([
      ['10.96.0.10:53/UDP', 'clusterIP', 4, [{ ip: '10.0.0.1', port: 5353 }]],
      ['10.96.0.10:80/TCP', 'clusterIP', 4, [{ ip: '10.0.0.1', port: 8080 }]],
      ['192.0.2.1:53/UDP', 'externalIP', 4, [{ ip: '10.0.0.1', port: 5353 }]],
      ['192.0.2.1:80/TCP', 'externalIP', 4, [{ ip: '10.0.0.1', port: 8080 }]],
      ['[2001:db8::1]:53/UDP', 'externalIP', 6, [{ ip: 'fd00::1', port: 5353 }]],
      ['[2001:db8::1]:80/TCP', 'externalIP', 6, [{ ip: 'fd00::1', port: 8080 }]],
      ['[fd00::10]:53/UDP', 'clusterIP', 6, [{ ip: 'fd00::1', port: 5353 }]],
      ['[fd00::10]:80/TCP', 'clusterIP', 6, [{ ip: 'fd00::1', port: 8080 }]],
    ]);
  });

  test('an externalIP of a family the Service has no ClusterIP of is left alone, as kube-proxy has no service port for it', () => {
    const { frontends, warnings } = compute(
      [svc('web', { clusterIP: '10.96.0.10', externalIPs: ['192.0.2.1', '2001:db8::1'], ports: http })],
      [slice('web', [ready('fd00::1')], httpSlicePort, { addressType: 'IPv6' })],
    );
    expect(frontends.map((f) => f.id)).toEqual(['10.96.0.10:80/TCP', '192.0.2.1:80/TCP']);
    expect(warnings).toEqual([]);
  });

  test('dual-stack services get a frontend per family with backends of that family', () => {
    const { frontends } = compute(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          clusterIPs: ['10.96.0.10', 'fd00:10:96::a'],
          ipFamilies: ['IPv4', 'IPv6'],
          ports: http,
        }),
      ],
      [
        slice('web', [ready('10.0.0.1')], httpSlicePort, { addressType: 'IPv4' }),
        slice('web', [ready('fd00:10:244::1')], httpSlicePort, { addressType: 'IPv6' }),
        slice('web', [{ addresses: ['web.example.com'] }], httpSlicePort, { addressType: 'FQDN' }),
      ],
    );
    expect(frontends.map((f) => [f.id, f.family, f.backends])).toEqual([
      ['10.96.0.10:80/TCP', 4, [{ ip: '10.0.0.1', port: 8080 }]],
      ['[fd00:10:96::a]:80/TCP', 6, [{ ip: 'fd00:10:244::1', port: 8080 }]],
    ]);
  });

  test('falls back to spec.clusterIP when clusterIPs is absent or empty', () => {
    const { frontends } = compute([svc('web', { clusterIP: '10.96.0.10', clusterIPs: [], ports: http })], []);
    expect(frontends.map((f) => f.id)).toEqual(['10.96.0.10:80/TCP']);
  });

  test('skips SCTP ports and defaults a missing protocol to TCP', () => {
    const { frontends } = compute(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          ports: [
            { name: 'sctp', port: 9, protocol: 'SCTP' },
            { name: 'plain', port: 80 },
          ],
        }),
      ],
      [
        slice(
          'web',
          [ready('10.0.0.1')],
          [
            { name: 'sctp', port: 9, protocol: 'SCTP' },
            { name: 'plain', port: 8080 },
          ],
        ),
      ],
    );
    expect(frontends.map((f) => [f.id, f.backends])).toEqual([['10.96.0.10:80/TCP', [{ ip: '10.0.0.1', port: 8080 }]]]);
  });

  test('serves the same port number over TCP and UDP as two frontends', () => {
    const { frontends } = compute(
      [
        svc('dns', {
          clusterIP: '10.96.0.10',
          ports: [
            { name: 'dns', port: 53, protocol: 'UDP' },
            { name: 'dns-tcp', port: 53, protocol: 'TCP' },
          ],
        }),
      ],
      [
        slice(
          'dns',
          [ready('10.0.0.1')],
          [
            { name: 'dns', port: 53, protocol: 'UDP' },
            { name: 'dns-tcp', port: 53, protocol: 'TCP' },
          ],
        ),
      ],
    );
    expect(frontends.map((f) => f.id)).toEqual(['10.96.0.10:53/TCP', '10.96.0.10:53/UDP']);
  });

  test('ClientIP affinity defaults to 10800 seconds', () => {
    const { frontends } = compute([svc('web', { clusterIP: '10.96.0.10', sessionAffinity: 'ClientIP', ports: http })], []);
    expect(frontends[0].affinityTimeoutSec).toBe(DEFAULT_AFFINITY_TIMEOUT_SEC);
    expect(DEFAULT_AFFINITY_TIMEOUT_SEC).toBe(10800);
  });

  test('ClientIP affinity uses the configured timeout', () => {
    const { frontends } = compute(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } },
          ports: http,
        }),
      ],
      [],
    );
    expect(frontends[0].affinityTimeoutSec).toBe(30);
  });

  test('affinity None or a timeout without ClientIP means no affinity', () => {
    const { frontends } = compute(
      [
        svc('a', { clusterIP: '10.96.0.1', sessionAffinity: 'None', ports: http }),
        svc('b', { clusterIP: '10.96.0.2', sessionAffinityConfig: { clientIP: { timeoutSeconds: 30 } }, ports: http }),
      ],
      [],
    );
    expect(frontends.map((f) => f.affinityTimeoutSec)).toEqual([0, 0]);
  });

  test('a duplicated VIP:port/proto is kept by the first service in key order, with a warning', () => {
    const { frontends, warnings } = compute(
      [svc('zeta', { clusterIP: '10.96.0.10', ports: http }), svc('alpha', { clusterIP: '10.96.0.10', ports: http }, 'shop')],
      [slice('alpha', [ready('10.0.0.1')], httpSlicePort), slice('zeta', [ready('10.0.0.2')], httpSlicePort)],
    );
    expect(frontends).toHaveLength(1);
    expect(frontends[0].service).toBe('shop/alpha');
    expect(frontends[0].backends.map((b) => b.ip)).toEqual(['10.0.0.1']);
    expect(warnings).toEqual([
      {
        msg: expect.stringContaining('Duplicate'),
        fields: { id: '10.96.0.10:80/TCP', kept: 'shop/alpha', skipped: 'shop/zeta' },
      },
    ]);
  });

  test('an externalIP equal to another service clusterIP is a duplicate too', () => {
    const { frontends, warnings } = compute(
      [
        svc('a', { clusterIP: '10.96.0.10', ports: http }),
        svc('b', { clusterIP: '10.96.0.11', externalIPs: ['10.96.0.10'], ports: http }),
      ],
      [],
    );
    expect(frontends.map((f) => `${f.id} ${f.service} ${f.scope}`)).toEqual([
      '10.96.0.10:80/TCP shop/a clusterIP',
      '10.96.0.11:80/TCP shop/b clusterIP',
    ]);
    expect(warnings).toHaveLength(1);
  });

  test('canonicalises IPv6 VIPs and backends so equal addresses collide', () => {
    const { frontends, warnings } = compute(
      [svc('a', { clusterIP: 'FD00::0001', ports: http }), svc('b', { clusterIP: 'fd00:0:0:0:0:0:0:1', ports: http })],
      [slice('a', [ready('FD00:0:0::00AB'), ready('fd00::ab')], httpSlicePort, { addressType: 'IPv6' })],
    );
    expect(frontends.map((f) => [f.id, f.ip, f.backends])).toEqual([
      ['[fd00::1]:80/TCP', 'fd00::1', [{ ip: 'fd00::ab', port: 8080 }]],
    ]);
    expect(warnings).toHaveLength(1);
  });

  test('sorts IPv6 backends numerically', () => {
    const { frontends } = compute(
      [svc('a', { clusterIP: 'fd00::1', ports: http })],
      [
        slice('a', [ready('fd00::10'), ready('fd00::9'), ready('::ffff:10.0.0.1'), ready('fd00:1::')], httpSlicePort, {
          addressType: 'IPv6',
        }),
      ],
    );
    expect(frontends[0].backends.map((b) => b.ip)).toEqual(['::ffff:10.0.0.1', 'fd00::9', 'fd00::10', 'fd00:1::']);
  });

  test('skips invalid IPs and ports with a warning instead of throwing', () => {
    const { frontends, warnings } = compute(
      [
        svc('bad', { clusterIP: '10.96.0.300', ports: http }),
        svc('web', { clusterIP: '10.96.0.10', externalIPs: ['nope'], ports: [...http, { name: 'big', port: 70000 }] }),
      ],
      [slice('web', [ready('10.0.0.1'), ready('fd00::1'), ready('junk')], httpSlicePort)],
    );
    expect(frontends.map((f) => [f.id, f.backends])).toEqual([['10.96.0.10:80/TCP', [{ ip: '10.0.0.1', port: 8080 }]]]);
    expect(warnings.map((w) => w.msg)).toEqual([
      'Skipping invalid service IP',
      'Skipping invalid service IP',
      'Skipping invalid endpoint address',
      'Skipping invalid endpoint address',
      'Skipping service port out of range',
    ]);
  });

  test('returns frontends sorted by id regardless of input order', () => {
    const services = [
      svc('c', { clusterIP: '10.96.0.3', ports: http }),
      svc('a', { clusterIP: 'fd00::1', ports: http }),
      svc('b', { clusterIP: '10.96.0.20', ports: http }),
    ];
    const forward = compute(services, []).frontends.map((f) => f.id);
    const backward = compute([...services].reverse(), []).frontends.map((f) => f.id);
    expect(forward).toEqual(['10.96.0.20:80/TCP', '10.96.0.3:80/TCP', '[fd00::1]:80/TCP']);
    expect(backward).toEqual(forward);
  });

  test('gives each frontend its own backends array', () => {
    const { frontends } = compute(
      [svc('web', { clusterIP: '10.96.0.10', externalIPs: ['192.0.2.1'], ports: http })],
      [slice('web', [ready('10.0.0.1')], httpSlicePort)],
    );
    frontends[0].backends.push({ ip: '10.9.9.9', port: 1 });
    expect(frontends[1].backends).toEqual([{ ip: '10.0.0.1', port: 8080 }]);
  });

  test('logs warnings through log.warn by default', async () => {
    const { log } = await import('../../src/log');
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    computeFrontends([svc('bad', { clusterIP: '1.2.3.999', ports: http })], []);
    expect(warn).toHaveBeenCalledWith('Skipping invalid service IP', expect.objectContaining({ service: 'shop/bad' }));
    warn.mockRestore();
  });
});

describe('canonicalIp', () => {
  test('compresses and lowercases IPv6 and keeps IPv4 as is', () => {
    expect(canonicalIp('fd00::0001')).toEqual({ ip: 'fd00::1', family: 6 });
    expect(canonicalIp('2001:0DB8:0000:0000:0000:FF00:0042:8329')).toEqual({ ip: '2001:db8::ff00:42:8329', family: 6 });
    expect(canonicalIp('10.1.2.3')).toEqual({ ip: '10.1.2.3', family: 4 });
  });

  test('rejects invalid addresses, leading zeros and zone suffixes', () => {
    expect(canonicalIp('010.1.2.3')).toBeUndefined();
    expect(canonicalIp('fe80::1%eth0')).toBeUndefined();
    expect(canonicalIp('')).toBeUndefined();
  });
});
