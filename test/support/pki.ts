/**
 * Certificates made for a test with the real openssl: certificate authorities, a server certificate for
 * 127.0.0.1 and client certificates (for Kubernetes client-certificate authentication, CN = user).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  /** Paths of `<name>.pem` and `<name>.key`. */
  paths(name: string): { cert: string; key: string };
  pem(name: string): { cert: string; key: string };
}

export function makeTestPki(o: { cas: string[]; server?: { name: string; ca: string }; clients?: Array<{ name: string; ca: string; cn: string }> }): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-pki-'));
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  for (const ca of o.cas) ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${ca}`, '-keyout', `${ca}.key`, '-out', `${ca}.pem`);
  const issue = (name: string, ca: string, subject: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  };
  if (o.server) issue(o.server.name, o.server.ca, '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  for (const c of o.clients ?? []) issue(c.name, c.ca, `/CN=${c.cn}`, 'extendedKeyUsage=clientAuth\n');
  const paths = (name: string) => ({ cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) });
  return {
    dir,
    paths,
    pem: (name) => ({ cert: readFileSync(paths(name).cert, 'utf8'), key: readFileSync(paths(name).key, 'utf8') }),
  };
}
