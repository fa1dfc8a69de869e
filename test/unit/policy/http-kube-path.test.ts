import { describe, expect, it } from 'vitest';
import { describeKubeRequest, parseKubeRequest } from '../../../src/policy/kube-path.js';

describe('parseKubeRequest', () => {
  it.each([
    ['GET', '/api/v1/namespaces/default/pods', { verb: 'list', apiGroup: '', version: 'v1', namespace: 'default', resource: 'pods' }],
    ['GET', '/api/v1/namespaces/default/pods?watch=1', { verb: 'watch', namespace: 'default', resource: 'pods' }],
    ['GET', '/api/v1/namespaces/default/pods?watch=true&resourceVersion=5', { verb: 'watch', resource: 'pods' }],
    ['GET', '/api/v1/watch/namespaces/default/pods', { verb: 'watch', namespace: 'default', resource: 'pods' }],
    ['GET', '/api/v1/namespaces/default/pods/web', { verb: 'get', namespace: 'default', resource: 'pods', name: 'web' }],
    ['GET', '/api/v1/pods', { verb: 'list', resource: 'pods' }],
    ['POST', '/api/v1/namespaces/default/pods', { verb: 'create', resource: 'pods' }],
    ['PUT', '/api/v1/namespaces/default/pods/web', { verb: 'update', name: 'web' }],
    ['PATCH', '/api/v1/namespaces/default/pods/web', { verb: 'patch', name: 'web' }],
    ['DELETE', '/api/v1/namespaces/default/pods/web', { verb: 'delete', name: 'web' }],
    ['DELETE', '/api/v1/namespaces/default/pods', { verb: 'deletecollection', resource: 'pods' }],
    ['GET', '/api/v1/namespaces/default/pods/web/log?follow=true', { verb: 'get', resource: 'pods', subresource: 'log', name: 'web' }],
    ['POST', '/api/v1/namespaces/default/pods/web/exec?command=sh', { verb: 'create', resource: 'pods', subresource: 'exec', name: 'web' }],
    // WebSocket exec is a GET: still `create`, so a `create pods/exec` rule holds it.
    ['GET', '/api/v1/namespaces/default/pods/web/exec?command=sh', { verb: 'create', subresource: 'exec' }],
    ['GET', '/api/v1/namespaces/default/pods/web/portforward?ports=80', { verb: 'create', subresource: 'portforward' }],
    ['GET', '/api/v1/namespaces/default/pods/web/attach', { verb: 'create', subresource: 'attach' }],
    ['GET', '/api/v1/namespaces', { verb: 'list', resource: 'namespaces' }],
    ['DELETE', '/api/v1/namespaces/prod', { verb: 'delete', resource: 'namespaces', name: 'prod', namespace: 'prod' }],
    ['PUT', '/api/v1/namespaces/prod/finalize', { verb: 'update', resource: 'namespaces', name: 'prod', subresource: 'finalize' }],
    ['GET', '/api/v1/namespaces/prod/status', { verb: 'get', resource: 'namespaces', name: 'prod', subresource: 'status' }],
    ['GET', '/apis/apps/v1/namespaces/shop/deployments/cart', { verb: 'get', apiGroup: 'apps', version: 'v1', namespace: 'shop', resource: 'deployments', name: 'cart' }],
    ['PATCH', '/apis/apps/v1/namespaces/shop/deployments/cart/scale', { verb: 'patch', resource: 'deployments', subresource: 'scale' }],
    ['GET', '/apis/rbac.authorization.k8s.io/v1/clusterroles', { verb: 'list', apiGroup: 'rbac.authorization.k8s.io', resource: 'clusterroles' }],
    ['GET', '/api/v1/nodes/n1/proxy/metrics', { verb: 'create', resource: 'nodes', name: 'n1', subresource: 'proxy' }],
  ])('%s %s', (method, path, expected) => {
    const r = parseKubeRequest(method, path);
    expect(r.nonResource).toBe(false);
    expect(r).toMatchObject(expected);
  });

  it.each(['/version', '/api', '/api/v1', '/apis', '/apis/apps', '/apis/apps/v1', '/openapi/v3', '/healthz'])('%s is a non-resource request', (path) => {
    const r = parseKubeRequest('GET', path);
    expect(r).toMatchObject({ nonResource: true, verb: 'get', path });
    expect(r.resource).toBeUndefined();
  });

  it('decodes escaped path parts and describes a request in one line', () => {
    expect(parseKubeRequest('GET', '/api/v1/namespaces/a%2Db/pods/w%65b')).toMatchObject({ namespace: 'a-b', name: 'web' });
    expect(describeKubeRequest(parseKubeRequest('POST', '/api/v1/namespaces/default/pods/web/exec'))).toBe('create pods/exec default/web');
    expect(describeKubeRequest(parseKubeRequest('DELETE', '/api/v1/namespaces/prod'))).toBe('delete namespaces prod');
    expect(describeKubeRequest(parseKubeRequest('GET', '/api/v1/namespaces/default/pods'))).toBe('list pods in default');
  });
});
