import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { writeKubeconfig } from '../../../src/tunnel/kubeconfig.js';

const dirs: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'hoop-kubeconfig-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('writeKubeconfig', () => {
  it("carries the tunnel's bearer over HTTPS with the listener's certificate as CA; https without that CA is refused", () => {
    const path = join(temp(), 'k8s.yaml');
    writeKubeconfig({ path, server: 'https://127.0.0.1:6443', contextName: 'c', token: 'tunnel-bearer', certificateAuthority: 'PEM TEXT' }, {});
    const doc = parse(readFileSync(path, 'utf8'));
    expect(doc.users[0].user).toEqual({ token: 'tunnel-bearer' });
    expect(doc.clusters[0].cluster).toEqual({ server: 'https://127.0.0.1:6443', 'certificate-authority-data': Buffer.from('PEM TEXT').toString('base64') });
    expect(() => writeKubeconfig({ path, server: 'https://127.0.0.1:6443', contextName: 'c' }, {})).toThrow(/must be the local tunnel/);
  });

  it('writes a context pointing at the local listener, without credentials, mode 0600, and a usage hint', () => {
    const path = join(temp(), 'nested', 'k8s-prod.yaml');
    const r = writeKubeconfig({ path, server: 'http://127.0.0.1:6443', contextName: 'hoopctl-k8s-prod', namespace: 'shop' }, {});
    const doc = parse(readFileSync(path, 'utf8'));
    expect(doc).toMatchObject({
      kind: 'Config',
      'current-context': 'hoopctl-k8s-prod',
      clusters: [{ name: 'hoopctl-k8s-prod', cluster: { server: 'http://127.0.0.1:6443' } }],
      users: [{ name: 'hoopctl-k8s-prod', user: {} }],
      contexts: [{ name: 'hoopctl-k8s-prod', context: { cluster: 'hoopctl-k8s-prod', user: 'hoopctl-k8s-prod', namespace: 'shop' } }],
    });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(r).toEqual({ path, hint: `KUBECONFIG=${path} kubectl get pods` });
  });

  it('refuses the user’s own kubeconfig (KUBECONFIG) and anything but the local tunnel', () => {
    const d = temp();
    const own = join(d, 'config');
    writeFileSync(own, 'mine');
    expect(() => writeKubeconfig({ path: own, server: 'http://127.0.0.1:1', contextName: 'x' }, { KUBECONFIG: own })).toThrow(/refusing to overwrite/);
    expect(readFileSync(own, 'utf8')).toBe('mine');
    expect(() => writeKubeconfig({ path: join(d, 'k.yaml'), server: 'https://10.0.0.1:6443', contextName: 'x' }, {})).toThrow(/local tunnel/);
  });

  it('quotes a path with spaces in the hint', () => {
    const path = join(temp(), 'my dir', 'k.yaml');
    expect(writeKubeconfig({ path, server: 'http://127.0.0.1:1', contextName: 'x' }, {}).hint).toBe(`KUBECONFIG='${path}' kubectl get pods`);
  });
});
