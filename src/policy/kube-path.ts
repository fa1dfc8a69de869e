/**
 * What a Kubernetes API request is about, read from its method, path and query the way the API server's own
 * request-info reader does: the verb (get, list, watch, create, update, patch, delete, deletecollection), API
 * group and version, namespace, resource, subresource and name. Requests outside the resource API (`/version`,
 * `/api`, `/apis/apps`, `/openapi/v3`, `/healthz`) are `nonResource` with the lower-cased method as verb.
 *
 * One deliberate difference: the streaming subresources (exec, attach, portforward, proxy) are always verb
 * `create`, whatever the method. kubectl opens them as a WebSocket `GET` (1.30+) or an SPDY `POST`; judging both
 * as `create` means a `create pods/exec` rule cannot be stepped around by choosing the transport.
 * @see https://kubernetes.io/docs/reference/access-authn-authz/authorization/#determine-the-request-verb
 */

export const KUBE_VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'] as const;
export type KubeVerb = (typeof KUBE_VERBS)[number];

export interface KubeRequest {
  /** A resource verb, or the lower-cased HTTP method for non-resource paths. */
  verb: string;
  nonResource: boolean;
  /** The path without query, as requested. */
  path: string;
  /** '' for the core group (`/api/v1`). */
  apiGroup?: string;
  version?: string;
  namespace?: string;
  resource?: string;
  subresource?: string;
  name?: string;
}

/** Subresources that open a stream: judged as `create` (see the file header). */
export const CONNECT_SUBRESOURCES: ReadonlySet<string> = new Set(['exec', 'attach', 'portforward', 'proxy']);

/** Path parts after `namespaces/{ns}` that are subresources of the namespace itself, not namespaced resources. */
const NAMESPACE_SUBRESOURCES: ReadonlySet<string> = new Set(['status', 'finalize']);

function segmentsOf(path: string): string[] {
  return path
    .split('/')
    .filter((s) => s.length > 0)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
}

function isTrue(v: string | null): boolean {
  return v !== null && (v === '1' || v.toLowerCase() === 'true');
}

/** Reads a Kubernetes API request. `target` is the request target (`/api/v1/pods?watch=1`) or a URL. */
export function parseKubeRequest(method: string, target: string | URL): KubeRequest {
  const url = typeof target === 'string' ? new URL(target, 'http://kube.invalid') : target;
  const path = url.pathname;
  const m = method.toUpperCase();
  const nonResource: KubeRequest = { verb: m.toLowerCase(), nonResource: true, path };
  let parts = segmentsOf(path);
  let apiGroup: string;
  let version: string;
  if (parts[0] === 'api' && parts.length >= 3) {
    apiGroup = '';
    version = parts[1];
    parts = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    apiGroup = parts[1];
    version = parts[2];
    parts = parts.slice(3);
  } else {
    // `/api`, `/api/v1`, `/apis`, `/apis/apps/v1` (discovery) and everything outside the API.
    return nonResource;
  }

  let verb: string;
  // The legacy `/watch/` prefix (`/api/v1/watch/namespaces/default/pods`).
  let watchPrefix = false;
  if (parts[0] === 'watch') {
    watchPrefix = true;
    parts = parts.slice(1);
  }
  switch (m) {
    case 'GET':
    case 'HEAD':
      verb = 'get';
      break;
    case 'POST':
      verb = 'create';
      break;
    case 'PUT':
      verb = 'update';
      break;
    case 'PATCH':
      verb = 'patch';
      break;
    case 'DELETE':
      verb = 'delete';
      break;
    default:
      verb = m.toLowerCase();
  }

  let namespace: string | undefined;
  if (parts[0] === 'namespaces' && parts.length > 1) {
    namespace = parts[1];
    // `namespaces/{ns}/pods/…` is a namespaced resource; `namespaces/{ns}` and `namespaces/{ns}/status` are the
    // namespace object itself (whose namespace is its own name, as the API server sees it).
    if (parts.length > 2 && !NAMESPACE_SUBRESOURCES.has(parts[2])) parts = parts.slice(2);
  }
  const [resource, name, subresource] = parts;
  if (resource === undefined) return nonResource;

  if (watchPrefix) verb = 'watch';
  else if (verb === 'get' && name === undefined) verb = isTrue(url.searchParams.get('watch')) ? 'watch' : 'list';
  else if (verb === 'delete' && name === undefined) verb = 'deletecollection';
  if (subresource !== undefined && CONNECT_SUBRESOURCES.has(subresource)) verb = 'create';

  return {
    verb,
    nonResource: false,
    path,
    apiGroup,
    version,
    ...(namespace !== undefined ? { namespace } : {}),
    resource,
    ...(subresource !== undefined ? { subresource } : {}),
    ...(name !== undefined ? { name } : {}),
  };
}

/** `pods`, `pods/exec`, or the path for a non-resource request: how a request is named in messages and rules. */
export function kubeResourceString(r: KubeRequest): string {
  if (r.nonResource || r.resource === undefined) return r.path;
  return r.subresource ? `${r.resource}/${r.subresource}` : r.resource;
}

/** One line for approvers and logs: `create pods/exec default/web`. */
export function describeKubeRequest(r: KubeRequest): string {
  if (r.nonResource) return `${r.verb} ${r.path}`;
  const where = r.namespace !== undefined && r.resource !== 'namespaces' ? `${r.namespace}/` : '';
  return `${r.verb} ${kubeResourceString(r)}${r.name !== undefined ? ` ${where}${r.name}` : where ? ` in ${r.namespace}` : ''}`;
}
