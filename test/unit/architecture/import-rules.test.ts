import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The import rules in .dependency-cruiser.cjs (run over the real tree by `npm test`) are only worth something if they
 * fire. Each case builds a tiny tree with one deliberate violation and runs the same dependency-cruiser command.
 */
const ROOT = resolve(import.meta.dirname, '../../..');
const CRUISER = join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function violations(files: Record<string, string>): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'hoop-imports-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true }, include: ['src/**/*'] }));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const run = spawnSync(process.execPath, [CRUISER, 'src', '--config', join(ROOT, '.dependency-cruiser.cjs'), '--output-type', 'json'], { cwd: dir, encoding: 'utf8' });
  const report = JSON.parse(run.stdout) as { summary: { violations: Array<{ rule: { name: string }; from: string; to: string }> } };
  return report.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`);
}

describe('import rules', () => {
  it('let a tree that follows the design pass', () => {
    expect(
      violations({
        'src/api/identity.ts': 'export interface Identity { subject: string }\n',
        'src/policy/rules.ts': "import { createHmac } from 'node:crypto';\nexport const judge = () => createHmac('sha256', 'k');\n",
        'src/broker/config.ts': "import { judge } from '../policy/rules.js';\nexport const c = judge;\n",
        'src/broker/protocols/protocol.ts': "import type { Identity } from '../../api/identity.js';\nexport type Ctx = { identity: Identity };\n",
        'src/broker/protocols/tcp/serve.ts': "import type { Ctx } from '../protocol.js';\nimport { judge } from '../../../policy/rules.js';\nexport const serve = (c: Ctx) => [c, judge];\n",
        'src/commands/ui/view.ts': "import type { Identity } from '../../api/identity.js';\nexport const v = (i: Identity) => i;\n",
      }),
    ).toEqual([]);
  });

  // One tree holding one deliberate violation of each rule (a cruise takes seconds: one run checks them all).
  const found = () =>
    (cached ??= violations({
      'src/broker/reviews/review.ts': 'export interface Review { id: string }\n',
      'src/commands/ui/console.ts': "import type { Review } from '../../broker/reviews/review.js';\nexport const r = (x: Review) => x;\n",
      'src/tunnel/listener.ts': "import type { Review } from '../broker/reviews/review.js';\nexport const r = (x: Review) => x;\n",
      'src/auth/login.ts': "import type { Review } from '../broker/reviews/review.js';\nexport const r = (x: Review) => x;\n",
      'src/broker/store.ts': 'export const store = 1;\n',
      'src/policy/rules.ts': "import { readFileSync } from 'node:fs';\nimport { store } from '../broker/store.js';\nexport const r = [readFileSync, store];\n",
      'src/policy/net.ts': "import { connect } from 'net';\nexport const n = connect;\n",
      'src/broker/config.ts': 'export interface PostgresConnection { name: string }\n',
      'src/broker/protocols/postgres/proxy.ts': "import type { PostgresConnection } from '../../config.js';\nexport const p = (c: PostgresConnection) => c;\n",
      'src/broker/a.ts': "import { b } from './b.js';\nexport const a = () => b;\n",
      'src/broker/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
      'src/tunnel/agent-gate.ts': 'export const gate = 1;\n',
      'src/mcp/tools.ts': "import { gate } from '../tunnel/agent-gate.js';\nimport type { Review } from '../broker/reviews/review.js';\nexport const t = (r: Review) => [gate, r];\n",
    }));
  let cached: string[] | undefined;

  it('refuse an Ink component, a tunnel or login code that imports the broker', () => {
    expect(found()).toEqual(
      expect.arrayContaining([
        'client-side-not-broker: src/commands/ui/console.ts → src/broker/reviews/review.ts',
        'client-side-not-broker: src/tunnel/listener.ts → src/broker/reviews/review.ts',
        'client-side-not-broker: src/auth/login.ts → src/broker/reviews/review.ts',
      ]),
    );
  });

  it('refuse policy code that does I/O or knows the broker', () => {
    expect(found()).toEqual(
      expect.arrayContaining([
        'policy-does-no-io: src/policy/rules.ts → fs',
        'policy-is-pure: src/policy/rules.ts → src/broker/store.ts',
        'policy-does-no-io: src/policy/net.ts → net',
      ]),
    );
  });

  it('refuse a protocol that reaches back into the broker above it', () => {
    expect(found()).toContain('protocols-stay-below-the-broker: src/broker/protocols/postgres/proxy.ts → src/broker/config.ts');
  });

  it('refuse MCP tool code that reaches a front door\'s own side (tunnels, broker) instead of its AgentGate', () => {
    expect(found()).toEqual(
      expect.arrayContaining([
        'mcp-tools-are-front-door-neutral: src/mcp/tools.ts → src/tunnel/agent-gate.ts',
        'mcp-tools-are-front-door-neutral: src/mcp/tools.ts → src/broker/reviews/review.ts',
      ]),
    );
  });

  it('refuse an import cycle', () => {
    expect(found().filter((v) => v.startsWith('no-cycles: src/broker/a.ts') || v.startsWith('no-cycles: src/broker/b.ts')).length).toBeGreaterThan(0);
  });

  it('report nothing else in that tree', () => {
    expect(found().every((v) => /src\/(commands\/ui\/console|tunnel\/listener|auth\/login|policy\/(rules|net)|broker\/protocols\/postgres\/proxy|broker\/[ab]|mcp\/tools)\.ts/.test(v))).toBe(true);
  });
});
