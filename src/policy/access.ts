/**
 * Who may open a connection at all. Pure: identity facts in, a decision with its reason out.
 * Groups admit humans and machines alike; client ids admit service accounts only (a human's token
 * also names the CLI's client id, which must never widen access); subjects name single identities; claims admit
 * CI jobs by what their platform vouches for (repository, branch, environment).
 */
import { globMatch } from './glob.js';

export interface AccessRule {
  groups: string[];
  clientIds: string[];
  subjects: string[];
  /** Every listed claim must match one of its globs (`sub` is the token's subject). */
  claims?: Record<string, string | string[]>;
}

export interface AccessSubject {
  subject: string;
  kind: 'human' | 'service';
  clientId?: string;
  groups: string[];
  claims?: Record<string, string>;
}

/** Whether an identity's claims satisfy every listed claim (each a glob or a list of globs; `sub` is the subject). */
export function claimsMatch(wanted: Record<string, string | string[]>, who: Pick<AccessSubject, 'subject' | 'claims'>): boolean {
  const entries = Object.entries(wanted);
  if (entries.length === 0) return false;
  return entries.every(([name, globs]) => {
    const value = name === 'sub' ? who.subject : who.claims?.[name];
    return value !== undefined && (Array.isArray(globs) ? globs : [globs]).some((g) => globMatch(g, value));
  });
}

export type AccessDecision = { allowed: true; via: string } | { allowed: false; reason: string };

export function decideAccess(who: AccessSubject, rule: AccessRule, connection: string): AccessDecision {
  const group = who.groups.find((g) => rule.groups.includes(g));
  if (group) return { allowed: true, via: `group ${group}` };
  if (who.kind === 'service' && who.clientId && rule.clientIds.includes(who.clientId)) {
    return { allowed: true, via: `client ${who.clientId}` };
  }
  if (rule.subjects.includes(who.subject)) return { allowed: true, via: `subject ${who.subject}` };
  if (rule.claims && claimsMatch(rule.claims, who)) return { allowed: true, via: `claims ${Object.keys(rule.claims).join(', ')}` };
  const groups = who.groups.length ? who.groups.join(', ') : 'none';
  return {
    allowed: false,
    reason: `${who.kind === 'service' ? 'service account' : 'identity'} ${who.subject} (groups: ${groups}) may not open connection ${connection}`,
  };
}

/** A connection's `access`: who may open it, and whether opening also needs an approved access request (JIT). */
export interface ConnectionAccess extends AccessRule {
  approval?: { groups: string[] };
}

/** Why a just-in-time connection refuses an admitted identity that holds no grant (the broker's and the dry run's words). */
export function approvalRequiredReason(connection: string): string {
  return `connection ${connection} needs an approved access request`;
}

/** What `access` admits, for a person reading the config (`access.groups: dba; access.clientIds: ci-bot`). */
export function describeAccessRule(rule: AccessRule): string {
  const parts = [
    rule.groups.length ? `access.groups: ${rule.groups.join(', ')}` : '',
    rule.clientIds.length ? `access.clientIds: ${rule.clientIds.join(', ')}` : '',
    rule.subjects.length ? `access.subjects: ${rule.subjects.join(', ')}` : '',
    rule.claims && Object.keys(rule.claims).length ? `access.claims: ${Object.entries(rule.claims).map(([k, v]) => `${k}=${[v].flat().join('|')}`).join(', ')}` : '',
  ].filter(Boolean);
  return parts.length ? parts.join('; ') : 'access admits nobody';
}
