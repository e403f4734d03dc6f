/*
 * Throw-away TLS material for the fake API server: a self-signed CA and a server certificate it
 * signs for 127.0.0.1 / ::1 / localhost, made with the openssl command line (Node can't issue
 * X.509 certificates). ECDSA P-256 keys: quick to make, and Go (kubectl) and Node accept them.
 */

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface CertBundle {
  /** PEM files in dir. */
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The same as PEM text. */
  caPem: string;
  certPem: string;
  keyPem: string;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** Writes ca.crt/ca.key/server.crt/server.key into dir (which must exist) and returns them. */
export function makeCerts(dir: string, commonName = 'sluice-fake-apiserver'): CertBundle {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '3',
      '-sha256',
      '-subj',
      `/CN=${commonName}-ca`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-addext',
      'subjectKeyIdentifier=hash',
    ],
    dir,
  );
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${commonName}`], dir);
  fs.writeFileSync(
    path.join(dir, 'server.ext'),
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
  );
  const serial = '0x' + Date.now().toString(16) + Math.floor(Math.random() * 0xffff).toString(16);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-set_serial',
      serial,
      '-out',
      'server.crt',
      '-days',
      '3',
      '-sha256',
      '-extfile',
      'server.ext',
    ],
    dir,
  );
  const caFile = path.join(dir, 'ca.crt');
  const certFile = path.join(dir, 'server.crt');
  const keyFile = path.join(dir, 'server.key');
  return {
    caFile,
    certFile,
    keyFile,
    caPem: fs.readFileSync(caFile, 'utf8'),
    certPem: fs.readFileSync(certFile, 'utf8'),
    keyPem: fs.readFileSync(keyFile, 'utf8'),
  };
}
