/**
 * hoopctl's own kubeconfig for a `kubernetes` connection: one cluster (the local tunnel listener), one user with no
 * backend credential (the broker injects its own) — only the tunnel's own bearer, which the local listener checks and
 * takes out — one context, current. Written to a file of its own — never the user's
 * ~/.kube/config — with mode 0600, and a hint saying how to use it.
 */
import { mkdirSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { homedir } from 'node:os';
import { stringify } from 'yaml';
import { UserError } from '../lib/errors.js';

export interface KubeconfigOptions {
  /** Where to write, e.g. `$XDG_CONFIG_HOME/hoopctl/kube/k8s-prod.yaml`. */
  path: string;
  /** The local listener: `http://127.0.0.1:PORT`. */
  server: string;
  /** Context (and cluster and user) name, e.g. `hoopctl-k8s-prod`. */
  contextName: string;
  /** Default namespace of the context. */
  namespace?: string;
  /** The tunnel's bearer (`hoopctl connect` makes one per tunnel); it opens that tunnel only. */
  token?: string;
  /** PEM of the listener's throwaway certificate, for an `https://` server (kubectl sends a token only over TLS). */
  certificateAuthority?: string;
}

export interface KubeconfigResult {
  path: string;
  /** `KUBECONFIG=/…/k8s-prod.yaml kubectl get pods` */
  hint: string;
}

/** Where a user's own kubeconfig lives; hoopctl refuses to write there. */
function userKubeconfigs(env: NodeJS.ProcessEnv): string[] {
  const own = (env.KUBECONFIG ?? '').split(':').filter(Boolean).map((p) => resolve(p));
  return [resolve(homedir(), '.kube', 'config'), ...own];
}

export function kubeconfigDocument(o: Pick<KubeconfigOptions, 'server' | 'contextName' | 'namespace' | 'token' | 'certificateAuthority'>): string {
  const url = new URL(o.server);
  if (!(url.protocol === 'http:' || (url.protocol === 'https:' && o.certificateAuthority)) || !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
    throw new UserError(`kubeconfig server must be the local tunnel (http://127.0.0.1:PORT), not ${o.server}`, { code: 'USAGE' });
  }
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    preferences: {},
    clusters: [{
      name: o.contextName,
      cluster: { server: `${url.protocol}//${url.host}`, ...(o.certificateAuthority ? { 'certificate-authority-data': Buffer.from(o.certificateAuthority).toString('base64') } : {}) },
    }],
    users: [{ name: o.contextName, user: o.token ? { token: o.token } : {} }],
    contexts: [{ name: o.contextName, context: { cluster: o.contextName, user: o.contextName, ...(o.namespace ? { namespace: o.namespace } : {}) } }],
    'current-context': o.contextName,
  };
  return `# Written by hoopctl for its tunnel; ${o.token ? "the token is the tunnel's own" : 'no credentials'}: the broker adds its own.\n${stringify(doc)}`;
}

export function writeKubeconfig(o: KubeconfigOptions, env: NodeJS.ProcessEnv = process.env): KubeconfigResult {
  const path = resolve(o.path);
  if (userKubeconfigs(env).includes(path)) {
    throw new UserError(`refusing to overwrite your own kubeconfig ${path}; hoopctl writes a file of its own`, {
      code: 'USAGE',
      hint: 'unset KUBECONFIG (or point it elsewhere) while running hoopctl connect; use the printed KUBECONFIG=… line instead',
    });
  }
  const text = kubeconfigDocument(o);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Written beside and renamed, so a kubectl reading it never sees half a file.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
  const quoted = /^[\w./:@-]+$/.test(path) ? path : `'${path.replace(/'/g, `'\\''`)}'`;
  return { path, hint: `KUBECONFIG=${quoted} kubectl get pods` };
}
