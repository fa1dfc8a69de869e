import { describe, expect, it } from 'vitest';
import { evaluateHttpRequest, evaluateKubeRequest, httpPolicySchema, kubePolicySchema } from '../../../src/policy/http-rules.js';
import { parseKubeRequest } from '../../../src/policy/kube-path.js';
import type { PolicyIdentity } from '../../../src/policy/rules.js';

const dev: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['dev'] };
const sre: PolicyIdentity = { subject: 'sam', kind: 'human', groups: ['sre'] };
const kube = (method: string, path: string) => parseKubeRequest(method, path);

describe('http rules', () => {
  const policy = httpPolicySchema.parse({
    rules: [
      { name: 'no-admin', match: { path: '/admin/*' }, action: 'deny', message: 'ask the API team' },
      { name: 'refunds', match: { method: ['POST', 'PUT'], path: '/refunds/*' }, action: 'review' },
      { name: 'ops-admin', match: { path: '/admin/*', identity: { groups: ['sre'] } }, action: 'allow' },
    ],
  });

  it('denies by path glob, naming the rule and its message; deny beats a matching allow', () => {
    expect(evaluateHttpRequest(policy, dev, { method: 'GET', path: '/admin/users' })).toEqual({ action: 'deny', rule: 'no-admin', message: 'denied by rule "no-admin": ask the API team' });
    expect(evaluateHttpRequest(policy, sre, { method: 'GET', path: '/admin/users' }).action).toBe('deny');
  });

  it('reviews by method and path; methods ignore case; other requests fall to defaultAction', () => {
    expect(evaluateHttpRequest(policy, dev, { method: 'post', path: '/refunds/7' })).toMatchObject({ action: 'review', rule: 'refunds' });
    expect(evaluateHttpRequest(policy, dev, { method: 'GET', path: '/refunds/7' })).toEqual({ action: 'allow', message: 'allowed by default' });
  });

  it('defaultAction deny refuses what no rule allows', () => {
    const strict = httpPolicySchema.parse({ defaultAction: 'deny', rules: [{ name: 'reads', match: { method: ['GET', 'HEAD'] }, action: 'allow' }] });
    expect(evaluateHttpRequest(strict, dev, { method: 'GET', path: '/x' })).toMatchObject({ action: 'allow', rule: 'reads' });
    const d = evaluateHttpRequest(strict, dev, { method: 'DELETE', path: '/x' });
    expect(d.action).toBe('deny');
    expect(d.rule).toBeUndefined();
    expect(d.message).toContain('defaultAction: deny');
  });

  it('rejects duplicate rule names and unknown fields', () => {
    expect(httpPolicySchema.safeParse({ rules: [{ name: 'a', action: 'deny' }, { name: 'a', action: 'allow' }] }).success).toBe(false);
    expect(httpPolicySchema.safeParse({ rules: [{ name: 'a', match: { verb: 'get' }, action: 'deny' }] }).success).toBe(false);
  });
});

describe('kubernetes rules', () => {
  const policy = kubePolicySchema.parse({
    defaultAction: 'deny',
    rules: [
      { name: 'read-only', match: { verb: ['get', 'list', 'watch'] }, action: 'allow' },
      { name: 'keep-namespaces', match: { verb: 'delete', resource: 'namespaces' }, action: 'deny' },
      { name: 'exec-needs-approval', match: { verb: 'create', resource: 'pods/exec' }, action: 'review' },
      { name: 'no-prod-secrets', match: { resource: 'secrets', namespace: 'prod*' }, action: 'deny' },
      { name: 'sre-scale', match: { verb: 'patch', resource: 'deployments/scale', apiGroup: 'apps', identity: { groups: ['sre'] } }, action: 'allow' },
    ],
  });

  it('a read-only role in a few lines: reads allowed (discovery too), writes denied by default', () => {
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/default/pods')).action).toBe('allow');
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/default/pods?watch=1')).action).toBe('allow');
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/apis')).action).toBe('allow');
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/default/pods/web/log')).action).toBe('allow');
    const w = evaluateKubeRequest(policy, dev, kube('POST', '/api/v1/namespaces/default/pods'));
    expect(w).toMatchObject({ action: 'deny' });
    expect(w.message).toBe('create pods is not allowed: no rule allows it (defaultAction: deny)');
  });

  it('denies delete namespaces', () => {
    expect(evaluateKubeRequest(policy, sre, kube('DELETE', '/api/v1/namespaces/prod'))).toEqual({ action: 'deny', rule: 'keep-namespaces', message: 'denied by rule "keep-namespaces"' });
  });

  it('reviews create pods/exec, whether kubectl uses WebSocket (GET) or SPDY (POST)', () => {
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/default/pods/web/exec?command=sh'))).toMatchObject({ action: 'review', rule: 'exec-needs-approval' });
    expect(evaluateKubeRequest(policy, dev, kube('POST', '/api/v1/namespaces/default/pods/web/exec?command=sh'))).toMatchObject({ action: 'review', rule: 'exec-needs-approval' });
    // `pods` alone is not `pods/exec`: port-forward is not caught by the exec rule (and read-only does not allow it).
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/default/pods/web/portforward'))).toMatchObject({ action: 'deny' });
  });

  it('namespace globs: a read of prod secrets is denied even though reads are allowed', () => {
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/prod-eu/secrets/db'))).toMatchObject({ action: 'deny', rule: 'no-prod-secrets' });
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/namespaces/dev/secrets/db'))).toMatchObject({ action: 'allow' });
    // A cluster-wide list has no namespace: the namespaced rule does not match it.
    expect(evaluateKubeRequest(policy, dev, kube('GET', '/api/v1/secrets'))).toMatchObject({ action: 'allow', rule: 'read-only' });
  });

  it('identity, apiGroup and subresource-aware resource patterns', () => {
    const scale = kube('PATCH', '/apis/apps/v1/namespaces/shop/deployments/cart/scale');
    expect(evaluateKubeRequest(policy, sre, scale)).toMatchObject({ action: 'allow', rule: 'sre-scale' });
    expect(evaluateKubeRequest(policy, dev, scale)).toMatchObject({ action: 'deny' });
    const anySub = kubePolicySchema.parse({ rules: [{ name: 'no-pod-subs', match: { resource: 'pods/*' }, action: 'deny' }] });
    expect(evaluateKubeRequest(anySub, dev, kube('GET', '/api/v1/namespaces/d/pods/w/log')).action).toBe('deny');
    expect(evaluateKubeRequest(anySub, dev, kube('GET', '/api/v1/namespaces/d/pods/w')).action).toBe('allow');
  });

  it('nonResourcePath matches only requests outside the resource API', () => {
    const p = kubePolicySchema.parse({ rules: [{ name: 'no-metrics', match: { nonResourcePath: '/metrics*' }, action: 'deny' }] });
    expect(evaluateKubeRequest(p, dev, kube('GET', '/metrics')).action).toBe('deny');
    expect(evaluateKubeRequest(p, dev, kube('GET', '/api/v1/namespaces/metrics/pods')).action).toBe('allow');
  });
});
