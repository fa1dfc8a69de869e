import { describe, expect, it } from 'vitest';
import { decideAccess } from '../../../src/policy/access.js';

const rule = { groups: ['dba', 'ci-reporting'], clientIds: ['nightly-report'], subjects: ['alice'] };

describe('decideAccess', () => {
  it('admits a member of a listed group and says which group', () => {
    expect(decideAccess({ subject: 'bob', kind: 'human', groups: ['dev', 'dba'] }, rule, 'pg-prod')).toEqual({ allowed: true, via: 'group dba' });
  });

  it('admits a listed service account by client id', () => {
    expect(decideAccess({ subject: 'nightly-report', kind: 'service', clientId: 'nightly-report', groups: [] }, rule, 'pg-prod').allowed).toBe(true);
  });

  it('never admits a human because of the client id of the CLI they logged in with', () => {
    const d = decideAccess({ subject: 'mallory', kind: 'human', clientId: 'nightly-report', groups: [] }, rule, 'pg-prod');
    expect(d).toEqual({ allowed: false, reason: 'identity mallory (groups: none) may not open connection pg-prod' });
  });

  it('admits a listed subject', () => {
    expect(decideAccess({ subject: 'alice', kind: 'human', groups: [] }, rule, 'pg-prod').allowed).toBe(true);
  });

  it('refuses everyone else, naming the identity, its groups and the connection', () => {
    const d = decideAccess({ subject: 'ci-bot', kind: 'service', clientId: 'other', groups: ['dev'] }, rule, 'pg-prod');
    expect(d).toEqual({ allowed: false, reason: 'service account ci-bot (groups: dev) may not open connection pg-prod' });
  });

  it('admits a CI job by the claims its platform signed, every listed claim matching one of its globs', () => {
    const ci = { ...rule, claims: { repository: 'acme/deploy', ref: ['refs/heads/main', 'refs/tags/v*'] } };
    const job = (claims: Record<string, string>) => ({ subject: 'repo:x', kind: 'service' as const, groups: [], claims });
    expect(decideAccess(job({ repository: 'acme/deploy', ref: 'refs/heads/main' }), ci, 'pg-prod')).toEqual({ allowed: true, via: 'claims repository, ref' });
    expect(decideAccess(job({ repository: 'acme/deploy', ref: 'refs/tags/v1.2' }), ci, 'pg-prod').allowed).toBe(true);
    expect(decideAccess(job({ repository: 'acme/deploy', ref: 'refs/heads/feature' }), ci, 'pg-prod').allowed).toBe(false);
    expect(decideAccess(job({ repository: 'acme/other', ref: 'refs/heads/main' }), ci, 'pg-prod').allowed).toBe(false);
    expect(decideAccess(job({ repository: 'acme/deploy' }), ci, 'pg-prod').allowed).toBe(false);
    expect(decideAccess({ ...job({}), subject: 'repo:acme/deploy:environment:prod' }, { ...rule, claims: { sub: 'repo:acme/*:environment:prod' } }, 'pg-prod').allowed).toBe(true);
    expect(decideAccess(job({ repository: 'acme/deploy' }), { ...rule, claims: {} }, 'pg-prod').allowed).toBe(false);
  });
});
