/**
 * Request rules of `http` and `kubernetes` connections, and the verdict they give one request.
 *
 * ## Schema (YAML, inside a connection of the broker config)
 * ```yaml
 * # type: http — method and path globs
 * defaultAction: allow               # allow | deny — when no rule matches (default: allow)
 * rules:
 *   - name: no-admin
 *     match: { method: ["*"], path: ["/admin/*"] }
 *     action: deny                   # allow | deny | review
 *     message: the admin API is off limits   # optional, shown to the client
 *   - { name: refunds, match: { method: POST, path: "/payments/*" }, action: review }
 *
 * # type: kubernetes — what the API path means
 * defaultAction: deny
 * rules:
 *   - { name: read-only, match: { verb: [get, list, watch] }, action: allow }
 *   - { name: keep-namespaces, match: { verb: delete, resource: namespaces }, action: deny }
 *   - { name: exec-needs-approval, match: { verb: create, resource: pods/exec }, action: review }
 *   - { name: prod-secrets, match: { resource: secrets, namespace: "prod*" }, action: deny }
 * ```
 * Every match field is a glob or a list of globs (any of them); the fields are ANDed; `identity` is as for
 * PostgreSQL rules (`groups`, `subjects`, `clientIds`, `kind`).
 * - HTTP `path` is matched against the decoded path without its query; `*` also crosses `/`. `method` ignores case.
 * - Kubernetes `resource` is matched against `resource` or `resource/subresource`: `pods` is the pods themselves,
 *   `pods/exec` their exec subresource, `pods/*` any subresource of pods, `*` everything. `subresource`,
 *   `namespace`, `name`, `apiGroup` ('' is the core group) are globs on those parts; a field a request does not
 *   have (a cluster-scoped request has no namespace) does not match. `nonResourcePath` matches requests outside
 *   the resource API (`/version`, `/healthz`, discovery). Verbs come from src/policy/kube-path.ts (exec, attach,
 *   portforward and proxy are always `create`).
 *
 * ## Verdicts
 * A request gets the strictest verdict of the rules that match it (deny > review > allow), else `defaultAction`.
 */
import { z } from 'zod';
import { globMatch } from './glob.js';
import { identityMatchSchema, identityMatches, type PolicyIdentity, type VerdictAction } from './rules.js';
import { kubeResourceString, parseKubeRequest, type KubeRequest } from './kube-path.js';

const globList = z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string().trim().min(1)).min(1));

export const httpRequestMatchSchema = z.strictObject({
  method: globList.optional(),
  path: globList.optional(),
  identity: identityMatchSchema.optional(),
});

export const kubeRequestMatchSchema = z.strictObject({
  verb: globList.optional(),
  apiGroup: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string().trim())).optional(),
  resource: globList.optional(),
  subresource: globList.optional(),
  namespace: globList.optional(),
  name: globList.optional(),
  nonResourcePath: globList.optional(),
  identity: identityMatchSchema.optional(),
});

const action = z.enum(['allow', 'deny', 'review']);

function ruleListSchema<T extends z.ZodType>(match: T) {
  return z
    .array(z.strictObject({ name: z.string().min(1), match: match.optional(), action, message: z.string().optional() }))
    .superRefine((rules, ctx) => {
      const seen = new Set<string>();
      rules.forEach((r, i) => {
        if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name "${r.name}"` });
        seen.add(r.name);
      });
    });
}

export const httpRulesSchema = ruleListSchema(httpRequestMatchSchema);
export const kubeRulesSchema = ruleListSchema(kubeRequestMatchSchema);

/** The policy fields of an http connection, to spread into its connection schema. */
export const httpPolicyShape = {
  defaultAction: z.enum(['allow', 'deny']).default('allow'),
  rules: httpRulesSchema.default([]),
};
/** The policy fields of a kubernetes connection. */
export const kubePolicyShape = {
  defaultAction: z.enum(['allow', 'deny']).default('allow'),
  rules: kubeRulesSchema.default([]),
};
export const httpPolicySchema = z.object(httpPolicyShape);
export const kubePolicySchema = z.object(kubePolicyShape);

export type HttpRequestMatch = z.infer<typeof httpRequestMatchSchema>;
export type KubeRequestMatch = z.infer<typeof kubeRequestMatchSchema>;
export type HttpPolicy = z.infer<typeof httpPolicySchema>;
export type KubePolicy = z.infer<typeof kubePolicySchema>;
export type HttpRule = HttpPolicy['rules'][number];
export type KubeRule = KubePolicy['rules'][number];

export interface RequestVerdict {
  action: VerdictAction;
  /** The deciding rule; absent when `defaultAction` decided. */
  rule?: string;
  /** For the client: `denied by rule "no-admin": …`. */
  message: string;
}

/** The HTTP request a rule is judged against. */
export interface HttpRequestInfo {
  method: string;
  /** Decoded path without query. */
  path: string;
}

const SEVERITY: Record<VerdictAction, number> = { allow: 0, review: 1, deny: 2 };

function anyGlob(patterns: readonly string[] | undefined, value: string | undefined, caseInsensitive = false): boolean {
  if (patterns === undefined) return true;
  if (value === undefined) return false;
  return patterns.some((p) => globMatch(p, value, caseInsensitive));
}

export function httpRequestMatches(match: HttpRequestMatch | undefined, req: HttpRequestInfo, who: PolicyIdentity): boolean {
  if (!match) return true;
  return identityMatches(match.identity, who) && anyGlob(match.method, req.method, true) && anyGlob(match.path, req.path);
}

export function kubeRequestMatches(match: KubeRequestMatch | undefined, req: KubeRequest, who: PolicyIdentity): boolean {
  if (!match) return true;
  if (!identityMatches(match.identity, who)) return false;
  if (!anyGlob(match.verb, req.verb, true)) return false;
  if (match.nonResourcePath !== undefined) return req.nonResource && anyGlob(match.nonResourcePath, req.path);
  const resourceFields = match.apiGroup ?? match.resource ?? match.subresource ?? match.namespace ?? match.name;
  if (resourceFields === undefined) return true; // verb (and identity) only: resource and non-resource requests alike
  if (req.nonResource) return false;
  if (match.apiGroup !== undefined && !match.apiGroup.some((g) => globMatch(g, req.apiGroup ?? ''))) return false;
  if (!anyGlob(match.resource, kubeResourceString(req))) return false;
  return anyGlob(match.subresource, req.subresource) && anyGlob(match.namespace, req.namespace) && anyGlob(match.name, req.name);
}

function decide<R extends { name: string; action: VerdictAction; message?: string }>(
  rules: readonly R[],
  defaultAction: 'allow' | 'deny',
  what: string,
  matches: (rule: R) => boolean,
): RequestVerdict {
  let best: R | undefined;
  for (const rule of rules) {
    if (!matches(rule)) continue;
    if (!best || SEVERITY[rule.action] > SEVERITY[best.action]) best = rule;
    if (best.action === 'deny') break;
  }
  if (!best) {
    return defaultAction === 'allow'
      ? { action: 'allow', message: 'allowed by default' }
      : { action: 'deny', message: `${what} is not allowed: no rule allows it (defaultAction: deny)` };
  }
  const extra = best.message ? `: ${best.message}` : '';
  const message =
    best.action === 'deny'
      ? `denied by rule "${best.name}"${extra}`
      : best.action === 'review'
        ? `held for review by rule "${best.name}"${extra}`
        : `allowed by rule "${best.name}"`;
  return { action: best.action, rule: best.name, message };
}

export function evaluateHttpRequest(policy: HttpPolicy, identity: PolicyIdentity, req: HttpRequestInfo): RequestVerdict {
  return decide(policy.rules, policy.defaultAction, `${req.method} ${req.path}`, (r) => httpRequestMatches(r.match, req, identity));
}

export function evaluateKubeRequest(policy: KubePolicy, identity: PolicyIdentity, req: KubeRequest): RequestVerdict {
  const what = req.nonResource ? `${req.verb} ${req.path}` : `${req.verb} ${kubeResourceString(req)}`;
  return decide(policy.rules, policy.defaultAction, what, (r) => kubeRequestMatches(r.match, req, identity));
}

export type WebConnectionPolicy = ({ type: 'http' } & HttpPolicy) | ({ type: 'kubernetes' } & KubePolicy);

/**
 * What the broker decides for one request on an http or kubernetes connection, as the client sent it (`url` is the
 * request target). The proxy and `hoopctl policy check` both call this, so a dry run cannot judge a request another
 * way: an http path is matched percent-decoded (`/%61dmin` is `/admin`, as the backend will read it), a Kubernetes
 * one by what the API path means.
 */
export function judgeWebRequest(policy: WebConnectionPolicy, identity: PolicyIdentity, method: string, url: URL): { verdict: RequestVerdict; kube?: KubeRequest } {
  const verb = method.toUpperCase();
  if (policy.type === 'kubernetes') {
    const kube = parseKubeRequest(verb, url);
    return { verdict: evaluateKubeRequest(policy, identity, kube), kube };
  }
  let path = url.pathname;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    // a malformed escape is matched as written
  }
  return { verdict: evaluateHttpRequest(policy, identity, { method: verb, path }) };
}
