import { describe, expect, it } from 'vitest';
import { commandMatchesPattern, commandPolicySchema, evaluateCommand, evaluateShell } from '../../../src/policy/shell-rules.js';
import type { PolicyIdentity } from '../../../src/policy/rules.js';

const alice: PolicyIdentity = { subject: 'alice', kind: 'human', groups: ['dba'] };
const bot: PolicyIdentity = { subject: 'deploy-bot', kind: 'service', clientId: 'deploy', groups: ['deployers'] };

const policy = commandPolicySchema.parse({
  rules: [
    { name: 'no-rm-rf', match: { command: ['rm -rf *', 'rm --recursive --force *'] }, action: 'deny' },
    { name: 'no-sudo', match: { command: 'sudo *' }, action: 'deny', message: 'no sudo here' },
    { name: 'held-restarts', match: { command: 'systemctl restart *' }, action: 'review' },
    { name: 'break-glass', match: { shell: true, identity: { groups: ['dba'] } }, action: 'review' },
  ],
});

describe('command patterns', () => {
  it.each([
    ['rm -rf *', 'rm -rf /', true],
    ['rm -rf *', 'rm -fr /tmp/x', true],
    ['rm -rf *', '/bin/rm -r -f /', true],
    ['rm -rf *', 'rm -rfv a b c', true],
    ['rm -rf *', 'rm -r /', false],
    ['rm -rf *', 'rmdir -rf /', false],
    ['systemctl status *', 'systemctl status nginx', true],
    ['systemctl status *', 'systemctl restart nginx', false],
    ['uptime', 'uptime', true],
    ['uptime', 'uptime -p', true],
    ['uptime', 'uptime now', false],
    ['python*', 'python3 x.py', false],
    ['python* *', 'python3 x.py', true],
    ['kill -9 *', 'kill -9 1', true],
  ])('%j ~ %j → %s', (pattern, command, expected) => {
    expect(commandMatchesPattern(pattern, command.split(' '))).toBe(expected);
  });
});

describe('evaluateCommand', () => {
  it.each([
    ['rm -rf /', 'deny', 'no-rm-rf'],
    ['echo hi; rm -rf /', 'deny', 'no-rm-rf'],
    ['echo hi && "rm" -rf /', 'deny', 'no-rm-rf'],
    ["'rm' '-rf' '/'", 'deny', 'no-rm-rf'],
    ['bash -c "rm -rf /"', 'deny', 'no-rm-rf'],
    ['rm --recursive --force /', 'deny', 'no-rm-rf'],
    ['sudo -u root id', 'deny', 'no-sudo'],
    ['ls | sudo tee /etc/x', 'deny', 'no-sudo'],
    ['systemctl restart nginx', 'review', 'held-restarts'],
    ['systemctl restart nginx; rm -rf /', 'deny', 'no-rm-rf'],
    ['echo $(id)', 'deny', 'dynamic-command'],
    ['curl http://x | sh', 'deny', 'dynamic-command'],
    ['echo "oops', 'deny', 'unparseable'],
  ])('%j → %s by %s', (text, action, rule) => {
    const v = evaluateCommand(policy, alice, text);
    expect(v).toMatchObject({ action, rule });
  });

  it('allows what no rule names', () => {
    expect(evaluateCommand(policy, alice, 'uptime; ls -l /tmp')).toMatchObject({ action: 'allow' });
  });

  it('names the rule and the command in the message', () => {
    const v = evaluateCommand(policy, alice, 'echo hi; rm -rf /');
    expect(v.message).toBe('command "rm -rf /" denied by policy rule "no-rm-rf"');
    expect(evaluateCommand(policy, alice, 'sudo id').message).toBe('no sudo here');
  });

  it('with defaultAction deny, only allowed commands run, wrappers included', () => {
    const strict = commandPolicySchema.parse({
      defaultAction: 'deny',
      rules: [{ name: 'ops', match: { command: ['uptime', 'df *', 'nohup *'], identity: { groups: ['deployers'] } }, action: 'allow' }],
    });
    expect(evaluateCommand(strict, bot, 'uptime && df -h')).toMatchObject({ action: 'allow' });
    expect(evaluateCommand(strict, bot, 'nohup uptime')).toMatchObject({ action: 'allow' });
    expect(evaluateCommand(strict, bot, 'nohup rm -rf /tmp/x')).toMatchObject({ action: 'deny', command: 'rm -rf /tmp/x' });
    expect(evaluateCommand(strict, alice, 'uptime')).toMatchObject({ action: 'deny' });
  });

  it('dynamic text can be sent to review instead', () => {
    const p = commandPolicySchema.parse({ dynamic: 'review', rules: [{ name: 'x', match: { command: 'reboot' }, action: 'deny' }] });
    expect(evaluateCommand(p, alice, 'echo $(date)')).toMatchObject({ action: 'review', rule: 'dynamic-command' });
    expect(evaluateCommand(p, alice, 'reboot; echo $(date)')).toMatchObject({ action: 'deny', rule: 'x' });
  });

  it('without rules nothing is judged', () => {
    expect(evaluateCommand(commandPolicySchema.parse({}), alice, 'echo $(rm -rf /)')).toMatchObject({ action: 'allow' });
  });
});

describe('evaluateShell', () => {
  it('applies shell rules by identity, then the default', () => {
    expect(evaluateShell(policy, alice)).toMatchObject({ action: 'review', rule: 'break-glass' });
    expect(evaluateShell(policy, bot)).toMatchObject({ action: 'allow' });
    expect(evaluateShell(commandPolicySchema.parse({ defaultAction: 'deny' }), bot)).toMatchObject({ action: 'deny' });
  });

  it('command rules never match a shell, shell rules never match a command', () => {
    const p = commandPolicySchema.parse({ rules: [{ name: 'no-shells', match: { shell: true }, action: 'deny' }, { name: 'all', action: 'deny' }] });
    expect(evaluateShell(p, alice).rule).toBe('no-shells');
    expect(evaluateCommand(p, alice, 'ls').rule).toBe('all');
  });

  it('refuses a rule that matches both', () => {
    expect(commandPolicySchema.safeParse({ rules: [{ name: 'x', match: { shell: true, command: 'ls' }, action: 'deny' }] }).success).toBe(false);
  });
});
