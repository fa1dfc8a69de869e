/**
 * Everything outside the config file that the broker needs to start: TLS files, keys, CA files, the store's
 * directory. `hoopctl broker check` and `startBroker` both call `openBrokerResources`, so what check passes, start
 * can open — and start fails on a problem before it creates a store file or a key. Nothing here writes.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { dirname, isAbsolute, join } from 'node:path';
import type { BrokerConfig } from './config.js';
import { configProblemLines, loadBrokerConfig } from './config.js';
import { parseCheckpointKey } from './recording/checkpoints.js';
import { describeKey } from './protocols/ssh/host-keys.js';
import { protocolOf } from './protocols/registry.js';
import { UserError } from '../lib/errors.js';

export interface BrokerResources {
  /** The SQLite file (absolute), or `:memory:` (also for a PostgreSQL store). */
  storePath: string;
  /** Where keys the broker generates itself are kept (beside the store). */
  keyDir: string;
  auditKeyPath: string;
  sshHostKeyPath: string;
  /** The server certificate and key, read and checked to form a pair. */
  tls?: { cert: Buffer; key: Buffer };
}

export interface OpenOptions {
  /** The caller brings its own store (tests, embedding): the SQLite path is not checked. */
  ownStore?: boolean;
  /** Problems found before (unreadable secrets at load), reported first with these. */
  earlier?: string[];
}

/**
 * What `hoopctl broker check` and `hoopctl broker start` both do first: read the config file, resolve its secrets
 * and open every file and key it names. Throws one UserError listing every problem, each by its field.
 */
export function prepareBroker(configPath: string, env: NodeJS.ProcessEnv = process.env): { config: BrokerConfig; resources: BrokerResources } {
  const earlier: string[] = [];
  const config = loadBrokerConfig(configPath, env, { problems: earlier });
  return { config, resources: openBrokerResources(config, { earlier }) };
}

const code = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e));

/**
 * Opens and checks every file and key the broker will use; throws one UserError naming each problem by its
 * config field (`server.tls.cert: cannot read /etc/x.pem: ENOENT`).
 */
export function openBrokerResources(config: BrokerConfig, options: OpenOptions = {}): BrokerResources {
  const problems: string[] = [...(options.earlier ?? [])];
  const attempt = <T>(field: string, run: () => T): T | undefined => {
    try {
      return run();
    } catch (e) {
      const lines = e instanceof UserError ? configProblemLines(e) : [`${field}: ${code(e)}`];
      problems.push(...lines);
      return undefined;
    }
  };
  const read = (field: string, path: string) =>
    attempt(field, () => {
      try {
        return readFileSync(path);
      } catch (e) {
        throw new Error(`cannot read ${path}: ${code(e)}`);
      }
    });

  // A PostgreSQL store has no file here: keys the broker keeps itself go beside the config (each replica would make
  // its own — configure audit.signingKey so every replica signs with the same one).
  const sqlitePath = config.store.type === 'sqlite' ? config.store.path : ':memory:';
  const storePath = sqlitePath === ':memory:' || isAbsolute(sqlitePath) ? sqlitePath : join(config.baseDir, sqlitePath);
  const keyDir = storePath === ':memory:' ? config.baseDir : dirname(storePath);
  const auditKeyPath = join(keyDir, 'hoopctl-audit-key.pem');
  const sshHostKeyPath = join(keyDir, 'hoopctl-ssh-host-key');

  let tls: BrokerResources['tls'];
  if (config.server.tls) {
    const cert = read('server.tls.cert', config.server.tls.cert);
    const key = read('server.tls.key', config.server.tls.key);
    if (cert && key) {
      attempt('server.tls', () => createSecureContext({ cert, key }));
      tls = { cert, key };
    }
  }

  if (!options.ownStore && config.store.type === 'sqlite' && storePath !== ':memory:') {
    if (existsSync(storePath)) {
      attempt('store.path', () => {
        if (!statSync(storePath).isFile()) throw new Error(`${storePath} is not a file`);
        accessSync(storePath, constants.R_OK | constants.W_OK);
      });
    }
    // SQLite writes its -wal and -shm files beside the store.
    attempt('store.path', () => assertCreatableIn(keyDir));
  }

  // Keys the broker keeps beside the store: read one that is there, else it will be created there.
  const keptKey = (field: string, path: string, parse: (text: string) => unknown) => {
    if (existsSync(path)) {
      const text = read(field, path);
      if (text) attempt(field, () => parse(text.toString('utf8')));
    } else {
      attempt(field, () => assertCreatableIn(keyDir));
    }
  };
  if (config.audit.signingKey) attempt('audit.signingKey', () => parseCheckpointKey(config.audit.signingKey!.reveal(), 'audit.signingKey'));
  else keptKey('audit.signingKey', auditKeyPath, (text) => parseCheckpointKey(text, auditKeyPath));
  if (config.ssh.hostKey) attempt('ssh.hostKey', () => describeKey(config.ssh.hostKey!.reveal(), 'ssh.hostKey'));
  else if (config.connections.some((c) => c.type === 'ssh')) keptKey('ssh.hostKey', sshHostKeyPath, (text) => describeKey(text, sshHostKeyPath));

  // What each connection's module needs beyond its secrets: CA files, keys that must parse, certificate pairs.
  config.connections.forEach((c, i) => problems.push(...(protocolOf(c.type).check?.(c, `connections[${i}]`) ?? [])));

  config.export.forEach((e, i) => {
    if (e.type !== 'file') return;
    if (existsSync(e.path)) attempt(`export[${i}].path`, () => accessSync(e.path, constants.W_OK));
    else attempt(`export[${i}].path`, () => assertCreatableIn(dirname(e.path)));
  });

  if (problems.length > 0) {
    throw new UserError(`invalid broker config:\n${[...new Set(problems)].map((p) => `  ${p}`).join('\n')}`, {
      code: 'CONFIG_INVALID',
      hint: 'fix the fields named above; `hoopctl broker check --config FILE` lists every problem without starting anything',
    });
  }
  return { storePath, keyDir, auditKeyPath, sshHostKeyPath, tls };
}

/** `dir` exists and is writable, or its nearest existing ancestor is (so `mkdir -p` will work). */
function assertCreatableIn(dir: string): void {
  let existing = dir;
  while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
  if (!statSync(existing).isDirectory()) throw new Error(`${existing} is not a directory`);
  try {
    accessSync(existing, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new Error(`cannot create files in ${existing}: ${code(e)}`);
  }
}
