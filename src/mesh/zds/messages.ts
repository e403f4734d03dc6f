/* The ZDS messages (package istio.workload.zds: istio/ztunnel proto/zds.proto, istio/istio
 * pkg/zdsapi), encoded with protobufjs from the schema below: field numbers are the protocol.
 * Every message fits in one 1024-byte SOCK_SEQPACKET datagram (both peers read that much).
 */
import * as protobuf from 'protobufjs';

const SCHEMA = `
syntax = "proto3";
package istio.workload.zds;
enum Version { NOT_USED = 0; V1 = 1; }
message ZdsHello { Version version = 1; }
message WorkloadInfo { string name = 1; string namespace = 2; string service_account = 3; reserved 4; }
message AddWorkload { string uid = 1; WorkloadInfo workload_info = 2; }
message KeepWorkload { string uid = 1; }
message DelWorkload { string uid = 2; }
message SnapshotSent {}
message Ack { string error = 1; }
message WorkloadRequest {
  oneof payload { AddWorkload add = 1; KeepWorkload keep = 5; DelWorkload del = 2; SnapshotSent snapshot_sent = 3; }
}
message WorkloadResponse { oneof payload { Ack ack = 1; } }
`;

/** The largest message either side reads (ztunnel and istio-cni both use 1024-byte buffers). */
export const ZDS_MAX_MESSAGE = 1024;
export const ZDS_VERSION_V1 = 1;

export interface WorkloadInfo {
  name: string;
  namespace: string;
  serviceAccount: string;
}

export type WorkloadRequest =
  | { add: { uid: string; workloadInfo: WorkloadInfo } }
  | { keep: { uid: string } }
  | { del: { uid: string } }
  | { snapshotSent: Record<string, never> };

const root = protobuf.parse(SCHEMA, { keepCase: false }).root;
const Hello = root.lookupType('istio.workload.zds.ZdsHello');
const Request = root.lookupType('istio.workload.zds.WorkloadRequest');
const Response = root.lookupType('istio.workload.zds.WorkloadResponse');

/** The request's kind, for logs. */
export function requestKind(r: WorkloadRequest): 'add' | 'keep' | 'del' | 'snapshot_sent' {
  if ('add' in r) return 'add';
  if ('keep' in r) return 'keep';
  if ('del' in r) return 'del';
  return 'snapshot_sent';
}

export function encodeRequest(r: WorkloadRequest): Buffer {
  const buf = Buffer.from(Request.encode(Request.fromObject(r)).finish());
  if (buf.length > ZDS_MAX_MESSAGE) {
    throw new RangeError(`Cannot send ZDS ${requestKind(r)}: ${buf.length} bytes, the protocol allows ${ZDS_MAX_MESSAGE}`);
  }
  return buf;
}

/** ztunnel's hello: its protocol version (0 when absent). Throws on a malformed message. */
export function decodeHello(buf: Buffer): number {
  const m = Hello.toObject(Hello.decode(buf), { enums: Number, defaults: true }) as { version: number };
  return m.version;
}

/** A WorkloadResponse: the ack's error text ('' = ack). Throws when it is not an ack. */
export function decodeAck(buf: Buffer): string {
  const m = Response.toObject(Response.decode(buf), { defaults: false, oneofs: true }) as { ack?: { error?: string } };
  if (!m.ack) throw new SyntaxError('ZDS response without an ack');
  return m.ack.error ?? '';
}

/** For tests and tools: decodes what the server sends. */
export function decodeRequest(buf: Buffer): WorkloadRequest {
  const m = Request.toObject(Request.decode(buf), { defaults: true, oneofs: true }) as Record<string, unknown> & {
    payload?: string;
  };
  const kind = m.payload;
  if (kind === 'add' || kind === 'keep' || kind === 'del' || kind === 'snapshotSent')
    return { [kind]: m[kind] } as WorkloadRequest;
  throw new SyntaxError('ZDS request without a payload');
}

export function encodeHello(version = ZDS_VERSION_V1): Buffer {
  return Buffer.from(Hello.encode(Hello.fromObject({ version })).finish());
}

export function encodeAck(error = ''): Buffer {
  return Buffer.from(Response.encode(Response.fromObject({ ack: { error } })).finish());
}
