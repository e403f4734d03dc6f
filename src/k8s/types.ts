/*
 * The slice of the Kubernetes object model the agent reads. Only the fields the
 * load-balancer model and the capture logic use are declared; parseObject
 * (validate.ts) projects decoded documents onto exactly these shapes, so
 * everything else (status conditions, managedFields, ...) never reaches the
 * store and cannot cause spurious change events.
 */

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IPFamily = 'IPv4' | 'IPv6';

/** metadata of a cluster-scoped object (Namespace, Node). */
export interface ObjectMeta {
  name: string;
  /** Absent on cluster-scoped kinds. */
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
}

/** metadata of a namespaced object: parseObject always fills the namespace ("default" when absent). */
export interface NamespacedObjectMeta extends ObjectMeta {
  namespace: string;
}

export interface Namespace {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface PodIP {
  ip: string;
}

/** An environment variable: only literal values are kept (valueFrom is not resolved: value absent). */
export interface EnvVar {
  name: string;
  value?: string;
}

/** The two securityContext fields that say whose sockets a container's processes own. */
export interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
}

/**
 * A container as istio-cni reads it to decide whether and how a pod is captured: every
 * container's name (istio-proxy, istio-init), and the proxy's args (its type), env
 * (DISABLE_ENVOY, ISTIO_META_DNS_CAPTURE) and securityContext (its uid/gid). Nothing else of
 * a container is kept: the agent holds every Pod of its node.
 */
export interface Container {
  name: string;
  args?: string[];
  env?: EnvVar[];
  securityContext?: SecurityContext;
}

export interface PodSpec {
  nodeName?: string;
  hostNetwork?: boolean;
  /** the workload identity ztunnel serves the pod with (absent: "default") */
  serviceAccountName?: string;
  containers?: Container[];
  /** also where a native sidecar (Kubernetes >= 1.28) runs istio-proxy */
  initContainers?: Container[];
}

export interface PodStatus {
  podIP?: string;
  podIPs?: PodIP[];
}

export interface Pod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: NamespacedObjectMeta;
  spec: PodSpec;
  status: PodStatus;
}

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
export type SessionAffinity = 'None' | 'ClientIP';

export interface ServicePort {
  /** Required by the API when a Service has more than one port; '' and absent mean the same. */
  name?: string;
  /** Absent means TCP. */
  protocol?: Protocol;
  port: number;
  /** A port number or the name of a container port. */
  targetPort?: number | string;
  /** The port on every node address (NodePort and LoadBalancer Services; absent when none is allocated). */
  nodePort?: number;
}

export interface ClientIPConfig {
  timeoutSeconds?: number;
}

export interface SessionAffinityConfig {
  clientIP?: ClientIPConfig;
}

/** internalTrafficPolicy: which endpoints a ClusterIP connection may reach (absent: Cluster). */
export type TrafficPolicy = 'Cluster' | 'Local';

/**
 * How a load balancer delivers traffic: `VIP` (absent means VIP) to the ingress IP itself, which
 * the node must then treat as a service VIP; `Proxy` to the nodes, which must leave the IP alone.
 */
export type LoadBalancerIPMode = 'VIP' | 'Proxy';

/** One entry of status.loadBalancer.ingress; only IP entries matter here (hostname ones are skipped). */
export interface LoadBalancerIngress {
  ip?: string;
  ipMode?: LoadBalancerIPMode;
}

export interface LoadBalancerStatus {
  ingress?: LoadBalancerIngress[];
}

export interface ServiceStatus {
  loadBalancer?: LoadBalancerStatus;
}

export interface ServiceSpec {
  /** Absent means ClusterIP. */
  type?: ServiceType;
  /** "None" for headless services, "" when unset. */
  clusterIP?: string;
  /** Dual-stack: the primary family first; clusterIPs[0] === clusterIP. */
  clusterIPs?: string[];
  externalIPs?: string[];
  ports?: ServicePort[];
  sessionAffinity?: SessionAffinity;
  sessionAffinityConfig?: SessionAffinityConfig;
  ipFamilies?: IPFamily[];
  internalTrafficPolicy?: TrafficPolicy;
  /** CIDRs allowed to reach the LoadBalancer IPs (kube-proxy's firewall chain); surrounding blanks allowed. */
  loadBalancerSourceRanges?: string[];
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: NamespacedObjectMeta;
  spec: ServiceSpec;
  /** Absent when the object has no status (or none we model). */
  status?: ServiceStatus;
}

/** Labels that make kube-proxy ignore a Service and its EndpointSlices (its informers' label selector). */
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';

/** The Node label that names its zone (what topology hints refer to). */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export type EndpointAddressType = IPFamily | 'FQDN';

export interface EndpointConditions {
  /** Absent (nil) means ready, per the API. */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

/** Where the EndpointSlice controller wants an endpoint consumed (written from trafficDistribution). */
export interface EndpointHints {
  /** zones whose nodes should use this endpoint (forZones[].name) */
  forZones?: string[];
  /** nodes that should use this endpoint (forNodes[].name) */
  forNodes?: string[];
}

export interface Endpoint {
  /** 1..100 fungible addresses; consumers such as kube-proxy use the first. */
  addresses: string[];
  conditions?: EndpointConditions;
  nodeName?: string;
  hints?: EndpointHints;
}

export interface EndpointPort {
  name?: string;
  /** Absent (nil) means "all ports"; kube-proxy ignores such ports. */
  port?: number;
  /** Absent means TCP. */
  protocol?: Protocol;
}

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** When the change an EndpointSlice reflects happened (the EndpointSlice controller writes it). */
export const LAST_CHANGE_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1';
  kind: 'EndpointSlice';
  metadata: NamespacedObjectMeta;
  addressType: EndpointAddressType;
  endpoints: Endpoint[];
  ports?: EndpointPort[];
}

/** A Node: only its labels are read (the zone of the node the agent runs on). */
export interface Node {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: ObjectMeta;
}

export type K8sObject = Namespace | Pod | Service | EndpointSlice | Node;
export type K8sKind = K8sObject['kind'];

/** Maps a kind name to its object type, for typed look-ups such as ObjectStore.list('Service'). */
export interface KindMap {
  Namespace: Namespace;
  Pod: Pod;
  Service: Service;
  EndpointSlice: EndpointSlice;
  Node: Node;
}
