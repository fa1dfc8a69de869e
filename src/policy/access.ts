/**
 * Who may open a connection at all. Pure: identity facts in, a decision with its reason out.
 * Groups admit humans and machines alike; client ids admit service accounts only (a human's token
 * also names the CLI's client id, which must never widen access); subjects name single identities.
 */
export interface AccessRule {
  groups: string[];
  clientIds: string[];
  subjects: string[];
}

export interface AccessSubject {
  subject: string;
  kind: 'human' | 'service';
  clientId?: string;
  groups: string[];
}

export type AccessDecision = { allowed: true; via: string } | { allowed: false; reason: string };

export function decideAccess(who: AccessSubject, rule: AccessRule, connection: string): AccessDecision {
  const group = who.groups.find((g) => rule.groups.includes(g));
  if (group) return { allowed: true, via: `group ${group}` };
  if (who.kind === 'service' && who.clientId && rule.clientIds.includes(who.clientId)) {
    return { allowed: true, via: `client ${who.clientId}` };
  }
  if (rule.subjects.includes(who.subject)) return { allowed: true, via: `subject ${who.subject}` };
  const groups = who.groups.length ? who.groups.join(', ') : 'none';
  return {
    allowed: false,
    reason: `${who.kind === 'service' ? 'service account' : 'identity'} ${who.subject} (groups: ${groups}) may not open connection ${connection}`,
  };
}
