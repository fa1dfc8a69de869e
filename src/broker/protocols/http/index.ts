/** HTTP and Kubernetes connections: what the broker wires in. */
export {
  makeHttpConnectionSchemas,
  httpConnectionSchema,
  kubernetesConnectionSchema,
  resolveWebConnection,
  readCaPem,
  DEFAULT_MASK_MAX_BYTES,
  type HttpConnectionInput,
  type KubernetesConnectionInput,
  type ResolvedHttpConnection,
  type ResolvedKubernetesConnection,
  type ResolvedWebConnection,
  type ResolvedHttpCredentials,
  type ResolvedKubernetesCredentials,
  type RevealableSecret,
  type ResolveSecret,
} from './config.js';
export { proxyHttpTunnel, type HttpSessionContext, type HttpSessionSummary } from './proxy.js';
