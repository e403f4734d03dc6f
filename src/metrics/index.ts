/* The agent's observability surface: Prometheus metrics and the health endpoints. */
export { AgentMetrics, cniReplyCode, PROGRAMMING_BUCKETS, type AgentState } from './agent-metrics';
export { AgentHttp, healthz, readyz, type AgentHealth } from './agent-http';
export { HttpEndpoint, type HttpAnswer, type Route } from './http-endpoint';
export { CAPTURE_DIRECTIONS, readKernelView, type CaptureDirection, type KernelView } from './kernel-view';
export { PodCounterTotals } from './pod-counter-totals';
export { LAST_CHANGE_TRIGGER_TIME, lastChangeTriggerTime, ProgrammingLatency } from './programming-latency';
