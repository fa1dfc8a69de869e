/**
 * A POSIX-shell reader for policy: splits an SSH exec command into the simple commands it would run, with
 * quotes and escapes removed (`"rm" -rf /` is `rm -rf /`), across `;`, `&&`, `||`, `|`, `&`, newlines,
 * subshells, groups and control keywords. It never runs anything and never expands variables.
 *
 * What cannot be known before the command runs is flagged `dynamic` with a reason, so the caller can fail
 * closed: command substitution (`$(…)`, backticks, `<(…)`), a command name that is itself an expansion
 * (`$CMD`), a shell reading its script from standard input (`curl … | sh`), `case` statements. Text inside a
 * substitution, `sh -c`, `eval` and wrappers such as `sudo`, `env`, `nohup` is read too, so the commands
 * they would run are judged like any other.
 */

export interface ShellCommand {
  /** Words after quote removal; expansions stay as written (`$HOME`). */
  words: string[];
  /** Wrappers this command runs under, outermost first (`['sudo']` for the `id` of `sudo -u root id`). */
  via: string[];
}

export interface ShellParse {
  ok: boolean;
  /** Why the text could not be read (unterminated quote …); set when `ok` is false. */
  error?: string;
  commands: ShellCommand[];
  /** Reasons the text's effect cannot be known from the text alone; empty when it can. */
  dynamic: string[];
}

/** One word as the shell sees it before expansion. */
interface Word {
  value: string;
  /** The word contains a `$…` expansion or substitution outside single quotes. */
  expands: boolean;
}

type Token = { kind: 'word'; word: Word } | { kind: 'op'; op: string };

const MAX_DEPTH = 8;

class ShellSyntaxError extends Error {}

const isSpace = (c: string) => c === ' ' || c === '\t';
const isNameStart = (c: string | undefined) => c !== undefined && /[A-Za-z_]/.test(c);
const OPERATOR_CHARS = new Set([';', '&', '|', '(', ')', '<', '>', '\n']);

/**
 * Turns the text into words and operators. Substitutions found on the way are handed to `onSubstitution`
 * (their text, to be read as commands); here-document bodies are skipped, their substitutions reported too.
 */
function tokenize(src: string, onSubstitution: (inner: string) => void, onDynamic: (reason: string) => void): Token[] {
  const tokens: Token[] = [];
  const pendingHeredocs: Array<{ delimiter: string; stripTabs: boolean; expands: boolean }> = [];
  let i = 0;

  const readHeredocBodies = () => {
    for (const doc of pendingHeredocs.splice(0)) {
      while (true) {
        if (i >= src.length) throw new ShellSyntaxError(`here-document ended before its delimiter "${doc.delimiter}"`);
        const end = src.indexOf('\n', i);
        const line = src.slice(i, end < 0 ? src.length : end);
        i = end < 0 ? src.length : end + 1;
        const compared = doc.stripTabs ? line.replace(/^\t+/, '') : line;
        if (compared === doc.delimiter) break;
        if (doc.expands) scanExpansions(line);
      }
    }
  };

  /** Reports substitutions in text that undergoes expansion (a here-document body). */
  const scanExpansions = (text: string) => {
    for (let j = 0; j < text.length; j++) {
      if (text[j] === '\\') j++;
      else if (text[j] === '`') {
        const end = findBacktick(text, j + 1);
        onSubstitution(unescapeBackticks(text.slice(j + 1, end)));
        j = end;
      } else if (text[j] === '$' && text[j + 1] === '(') {
        const end = findClosingParen(text, j + 2);
        if (text[j + 2] !== '(') onSubstitution(text.slice(j + 2, end));
        j = end;
      }
    }
  };

  /** Reads `$…` at src[i] into the word; returns the new position. */
  const readDollar = (w: Word, inDouble: boolean): void => {
    const next = src[i + 1];
    if (next === '(') {
      w.expands = true;
      if (src[i + 2] === '(') {
        // Arithmetic expansion: may still hide a substitution.
        const end = findClosingParen(src, i + 3);
        const inner = src.slice(i + 3, end);
        if (/\$\(|`/.test(inner)) onDynamic('command substitution inside arithmetic expansion');
        w.value += src.slice(i, end + 2);
        i = end + 2;
        return;
      }
      const end = findClosingParen(src, i + 2);
      onSubstitution(src.slice(i + 2, end));
      w.value += src.slice(i, end + 1);
      i = end + 1;
      return;
    }
    if (next === '{') {
      w.expands = true;
      const end = findClosingBrace(src, i + 2);
      const inner = src.slice(i + 2, end);
      scanExpansions(inner);
      w.value += src.slice(i, end + 1);
      i = end + 1;
      return;
    }
    if (next === "'" && !inDouble) {
      // $'…' (ANSI-C quoting): a quoted literal with backslash escapes.
      let j = i + 2;
      let text = '';
      while (j < src.length && src[j] !== "'") {
        if (src[j] === '\\' && j + 1 < src.length) {
          text += ansiEscape(src[j + 1]!);
          j += 2;
        } else text += src[j++];
      }
      if (j >= src.length) throw new ShellSyntaxError("unterminated $'…' string");
      w.value += text;
      i = j + 1;
      return;
    }
    if (next !== undefined && (isNameStart(next) || /[0-9@*#?$!-]/.test(next))) {
      w.expands = true;
      let j = i + 1;
      if (isNameStart(next)) while (j < src.length && /[A-Za-z0-9_]/.test(src[j]!)) j++;
      else j++;
      w.value += src.slice(i, j);
      i = j;
      return;
    }
    w.value += '$';
    i++;
  };

  while (i < src.length) {
    const c = src[i]!;
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (c === '\\' && src[i + 1] === '\n') {
      i += 2;
      continue;
    }
    if (c === '#') {
      while (i < src.length && src[i] !== '\n') i++;
      continue;
    }
    if (c === '\n') {
      tokens.push({ kind: 'op', op: '\n' });
      i++;
      readHeredocBodies();
      continue;
    }
    if (OPERATOR_CHARS.has(c) && !(c === '<' || c === '>') ) {
      const two = src.slice(i, i + 2);
      if (two === '&&' || two === '||' || two === ';;' || two === '|&' || two === '&>') {
        if (two === '&>') {
          i += src[i + 2] === '>' ? 3 : 2;
          tokens.push({ kind: 'op', op: 'redirect' });
          continue;
        }
        tokens.push({ kind: 'op', op: two });
        i += 2;
        continue;
      }
      tokens.push({ kind: 'op', op: c });
      i++;
      continue;
    }
    if (c === '<' || c === '>') {
      if ((c === '<' || c === '>') && src[i + 1] === '(') {
        // Process substitution: a word of its own.
        const end = findClosingParen(src, i + 2);
        onSubstitution(src.slice(i + 2, end));
        tokens.push({ kind: 'word', word: { value: src.slice(i, end + 1), expands: true } });
        i = end + 1;
        continue;
      }
      const heredoc = src.startsWith('<<', i) && src[i + 2] !== '<';
      if (heredoc) {
        const stripTabs = src[i + 2] === '-';
        i += stripTabs ? 3 : 2;
        while (isSpace(src[i] ?? '')) i++;
        const start = i;
        const delim = readWord();
        if (!delim) throw new ShellSyntaxError('here-document without a delimiter');
        const quoted = /['"\\]/.test(src.slice(start, i));
        pendingHeredocs.push({ delimiter: delim.value, stripTabs, expands: !quoted });
        continue;
      }
      // <, >, >>, <>, >|, <&, >&, <<< : the next word is a file, descriptor or string, never a command.
      i += 1;
      if (src[i] === '>' || src[i] === '|' || src[i] === '&' || src[i] === '<') i++;
      if (src[i] === '<') i++;
      tokens.push({ kind: 'op', op: 'redirect' });
      continue;
    }
    // A descriptor number directly before a redirection belongs to it (`2>&1`).
    if (/[0-9]/.test(c)) {
      let j = i;
      while (/[0-9]/.test(src[j] ?? '')) j++;
      if (src[j] === '<' || src[j] === '>') {
        i = j;
        continue;
      }
    }
    const w = readWord();
    if (w) tokens.push({ kind: 'word', word: w });
  }
  if (pendingHeredocs.length) throw new ShellSyntaxError(`here-document ended before its delimiter "${pendingHeredocs[0]!.delimiter}"`);
  return tokens;

  function readWord(): Word | undefined {
    const w: Word = { value: '', expands: false };
    const start = i;
    while (i < src.length) {
      const c = src[i]!;
      if (isSpace(c) || c === '\n' || OPERATOR_CHARS.has(c)) break;
      if (c === '\\') {
        if (src[i + 1] === '\n') {
          i += 2;
          continue;
        }
        if (i + 1 >= src.length) {
          i++;
          continue;
        }
        w.value += src[i + 1];
        i += 2;
      } else if (c === "'") {
        const end = src.indexOf("'", i + 1);
        if (end < 0) throw new ShellSyntaxError('unterminated single quote');
        w.value += src.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        while (true) {
          if (i >= src.length) throw new ShellSyntaxError('unterminated double quote');
          const d = src[i]!;
          if (d === '"') {
            i++;
            break;
          }
          if (d === '\\') {
            const n = src[i + 1];
            if (n === '$' || n === '`' || n === '"' || n === '\\') {
              w.value += n;
              i += 2;
            } else if (n === '\n') i += 2;
            else {
              w.value += '\\';
              i++;
            }
          } else if (d === '$') readDollar(w, true);
          else if (d === '`') readBacktick(w);
          else {
            w.value += d;
            i++;
          }
        }
      } else if (c === '$') readDollar(w, false);
      else if (c === '`') readBacktick(w);
      else {
        w.value += c;
        i++;
      }
    }
    return i > start ? w : undefined;
  }

  function readBacktick(w: Word): void {
    const end = findBacktick(src, i + 1);
    onSubstitution(unescapeBackticks(src.slice(i + 1, end)));
    w.expands = true;
    w.value += src.slice(i, end + 1);
    i = end + 1;
  }
}

function ansiEscape(c: string): string {
  return ({ n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', e: '\x1b', E: '\x1b', f: '\f', v: '\v', '\\': '\\', "'": "'", '"': '"' } as Record<string, string>)[c] ?? `\\${c}`;
}

function findBacktick(src: string, from: number): number {
  for (let j = from; j < src.length; j++) {
    if (src[j] === '\\') j++;
    else if (src[j] === '`') return j;
  }
  throw new ShellSyntaxError('unterminated backquote');
}

function unescapeBackticks(s: string): string {
  return s.replace(/\\([$`\\])/g, '$1');
}

/**
 * Position of the `close` that ends an `open` opened just before `from` (`$( … )`, `${ … }`), skipping quotes,
 * backquotes and nested pairs.
 */
function findClosing(src: string, from: number, open: '(' | '{', close: ')' | '}'): number {
  let depth = 1;
  for (let j = from; j < src.length; j++) {
    const c = src[j];
    if (c === '\\') j++;
    else if (c === "'") {
      j = src.indexOf("'", j + 1);
      if (j < 0) break;
    } else if (c === '"') j = skipDouble(src, j + 1);
    else if (c === '`') j = findBacktick(src, j + 1);
    else if (c === open) depth++;
    else if (c === close && --depth === 0) return j;
  }
  throw new ShellSyntaxError(`unterminated $${open} … ${close}`);
}

const findClosingParen = (src: string, from: number) => findClosing(src, from, '(', ')');
const findClosingBrace = (src: string, from: number) => findClosing(src, from, '{', '}');

function skipDouble(src: string, from: number): number {
  for (let j = from; j < src.length; j++) {
    if (src[j] === '\\') j++;
    else if (src[j] === '"') return j;
  }
  throw new ShellSyntaxError('unterminated double quote');
}

/** Words that open or close a compound command; the command proper starts after them. */
const KEYWORDS_BEFORE_COMMAND = new Set(['if', 'then', 'else', 'elif', 'do', 'while', 'until', '!', '{', 'time']);
const KEYWORDS_ALONE = new Set(['fi', 'done', 'esac', '}']);
const SEPARATORS = new Set([';', '&', '&&', '||', '|', '|&', '\n', '(', ')', ';;']);
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=/;

/** Splits the token list into simple commands (words only, redirection targets and assignments dropped). */
function simpleCommands(tokens: Token[], onDynamic: (reason: string) => void): Word[][] {
  const out: Word[][] = [];
  let current: Word[] = [];
  let skipUntilSeparator = false;
  let afterRedirect = false;
  const finish = () => {
    if (current.length) out.push(current);
    current = [];
    skipUntilSeparator = false;
  };
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k]!;
    if (t.kind === 'op') {
      if (t.op === 'redirect') {
        afterRedirect = true;
        continue;
      }
      // `name ( )` defines a function: the body that follows is read as commands; the name is not a command.
      if (t.op === '(' && current.length === 1 && tokens[k + 1]?.kind === 'op' && (tokens[k + 1] as { op: string }).op === ')') {
        current = [];
        k++;
        continue;
      }
      if (SEPARATORS.has(t.op)) finish();
      continue;
    }
    if (afterRedirect) {
      afterRedirect = false;
      continue;
    }
    if (skipUntilSeparator) continue;
    const w = t.word;
    if (current.length === 0) {
      if (KEYWORDS_BEFORE_COMMAND.has(w.value) && !w.expands) continue;
      if (KEYWORDS_ALONE.has(w.value)) continue;
      if (w.value === 'for' || w.value === 'select') {
        skipUntilSeparator = true;
        continue;
      }
      if (w.value === 'function') {
        k++; // the function's name
        continue;
      }
      if (w.value === 'case') {
        onDynamic('case statements are not judged');
        skipUntilSeparator = true;
        continue;
      }
      if (w.value === '[[') {
        while (k < tokens.length && !(tokens[k]!.kind === 'word' && (tokens[k] as { word: Word }).word.value === ']]')) k++;
        continue;
      }
      if (ASSIGNMENT.test(w.value)) continue;
    }
    current.push(w);
  }
  finish();
  return out;
}

/** Reads a shell text into the commands it would run. Never throws: a syntax error is `ok: false`. */
export function parseShell(src: string): ShellParse {
  const result: ShellParse = { ok: true, commands: [], dynamic: [] };
  try {
    readInto(src, [], 0, result);
  } catch (e) {
    if (!(e instanceof ShellSyntaxError)) throw e;
    return { ok: false, error: e.message, commands: result.commands, dynamic: result.dynamic };
  }
  return result;
}

function readInto(src: string, via: string[], depth: number, result: ShellParse): void {
  if (depth > MAX_DEPTH) {
    result.dynamic.push('commands nested too deeply');
    return;
  }
  const substitutions: string[] = [];
  const addDynamic = (reason: string) => {
    if (!result.dynamic.includes(reason)) result.dynamic.push(reason);
  };
  const tokens = tokenize(src, (inner) => substitutions.push(inner), addDynamic);
  for (const words of simpleCommands(tokens, addDynamic)) judgeWords(words, via, depth, result, addDynamic);
  for (const inner of substitutions) {
    addDynamic('command substitution: its output is only known when it runs');
    readInto(inner, via, depth + 1, result);
  }
}

function judgeWords(words: Word[], via: string[], depth: number, result: ShellParse, addDynamic: (r: string) => void): void {
  if (words.length === 0) return;
  const first = words[0]!;
  if (first.expands) addDynamic(`the command name "${first.value}" is only known when it runs`);
  result.commands.push({ words: words.map((w) => w.value), via });
  const inner = unwrap(words);
  if (!inner) return;
  if (inner.dynamic) addDynamic(inner.dynamic);
  const nextVia = [...via, basename(first.value)];
  if (inner.script !== undefined) {
    if (inner.scriptExpands) addDynamic(`the text run by ${basename(first.value)} is only known when it runs`);
    readInto(inner.script, nextVia, depth + 1, result);
  } else if (inner.words && inner.words.length) {
    judgeWords(inner.words, nextVia, depth, result, addDynamic);
  }
}

export function basename(word: string): string {
  const i = word.lastIndexOf('/');
  return i >= 0 ? word.slice(i + 1) : word;
}

/** What a wrapper command would run: more words, a script text, or something unknowable. */
interface Unwrapped {
  words?: Word[];
  script?: string;
  scriptExpands?: boolean;
  dynamic?: string;
}

const SHELLS = new Set(['sh', 'bash', 'dash', 'zsh', 'ksh', 'ash', 'mksh', 'fish', 'busybox-sh']);

/** Options (per wrapper) that take a value as the next word. */
const OPTIONS_WITH_VALUE: Record<string, Set<string>> = {
  sudo: new Set(['-u', '-g', '-h', '-p', '-C', '-D', '-r', '-t', '-U', '-T', '-R', '--user', '--group', '--host', '--prompt', '--close-from', '--chdir', '--role', '--type', '--other-user', '--command-timeout', '--chroot']),
  doas: new Set(['-u', '-C']),
  env: new Set(['-u', '-C', '--unset', '--chdir']),
  nice: new Set(['-n', '--adjustment']),
  ionice: new Set(['-c', '-n', '-p', '-P', '-u', '--class', '--classdata']),
  timeout: new Set(['-s', '-k', '--signal', '--kill-after']),
  stdbuf: new Set(['-i', '-o', '-e', '--input', '--output', '--error']),
  xargs: new Set(['-a', '-d', '-E', '-e', '-I', '-L', '-l', '-n', '-P', '-s', '--arg-file', '--delimiter', '--max-args', '--max-procs', '--max-chars', '--max-lines', '--replace']),
  exec: new Set(['-a']),
  su: new Set(['-s', '-g', '-G', '-w', '--shell', '--group', '--supp-group', '--whitelist-environment']),
  runuser: new Set(['-u', '-s', '-g', '-G', '-w', '--user', '--shell', '--group', '--supp-group']),
  setpriv: new Set(['--reuid', '--regid', '--groups', '--inh-caps', '--ambient-caps', '--bounding-set', '--securebits', '--selinux-label', '--apparmor-profile']),
  chrt: new Set(['-T', '-P', '-D']),
  taskset: new Set(['-c']),
  watch: new Set(['-n', '-d', '--interval', '--differences']),
  flock: new Set(['-w', '-E', '--timeout', '--conflict-exit-code']),
  time: new Set(['-f', '-o', '--format', '--output']),
};
const SIMPLE_WRAPPERS = new Set(['nohup', 'nice', 'ionice', 'stdbuf', 'setsid', 'unbuffer', 'command', 'builtin', 'exec', 'time', 'doas', 'sudo', 'env', 'xargs', 'chrt', 'taskset', 'setpriv', 'busybox', 'catchsegv', 'strace', 'ltrace', 'firejail', 'nsenter', 'unshare', 'chpst', 'faketime', 'pkexec']);

function unwrap(words: Word[]): Unwrapped | undefined {
  const name = basename(words[0]!.value);
  const rest = words.slice(1);
  if (name === 'eval') {
    return { script: rest.map((w) => w.value).join(' '), scriptExpands: rest.some((w) => w.expands) };
  }
  if (SHELLS.has(name)) return unwrapShell(rest, name);
  if (name === 'su' || name === 'runuser') {
    const c = optionValue(rest, ['-c', '--command']);
    if (c) return { script: c.value, scriptExpands: c.expands };
    if (name === 'runuser' && rest.some((w) => w.value === '-u' || w.value.startsWith('--user'))) return { words: afterOptions(rest, name) };
    return { dynamic: `${name} without -c starts a shell that reads its commands from standard input` };
  }
  if (name === 'sudo' || name === 'doas') {
    const inner = afterOptions(rest, name);
    const shellFlag = rest.slice(0, rest.length - inner.length).some((w) => /^-[a-zA-Z]*[is]/.test(w.value) && !w.value.startsWith('--') || w.value === '--login' || w.value === '--shell');
    if (inner.length === 0) return shellFlag ? { dynamic: `${name} starts a shell that reads its commands from standard input` } : undefined;
    if (shellFlag) return { script: inner.map((w) => w.value).join(' '), scriptExpands: inner.some((w) => w.expands) };
    return { words: inner };
  }
  if (name === 'env') {
    const s = optionValue(rest, ['-S', '--split-string']);
    if (s) return { script: s.value, scriptExpands: s.expands };
    return { words: afterOptions(rest, name) };
  }
  if (name === 'timeout') {
    const inner = afterOptions(rest, name);
    return { words: inner.slice(1) };
  }
  if (name === 'chroot') return { words: afterOptions(rest, name).slice(1) };
  if (name === 'flock') {
    const c = optionValue(rest, ['-c', '--command']);
    if (c) return { script: c.value, scriptExpands: c.expands };
    return { words: afterOptions(rest, name).slice(1) };
  }
  if (name === 'watch') {
    const inner = afterOptions(rest, name);
    return { script: inner.map((w) => w.value).join(' '), scriptExpands: inner.some((w) => w.expands) };
  }
  if (name === 'ssh' || name === 'scp') return undefined;
  if (SIMPLE_WRAPPERS.has(name)) {
    if (name === 'command' && rest.some((w) => w.value === '-v' || w.value === '-V')) return undefined;
    return { words: afterOptions(rest, name) };
  }
  return undefined;
}

function unwrapShell(rest: Word[], name: string): Unwrapped {
  for (let k = 0; k < rest.length; k++) {
    const w = rest[k]!.value;
    if (w === '--' || !w.startsWith('-') && !w.startsWith('+')) {
      const script = rest.slice(w === '--' ? k + 1 : k);
      if (script.length === 0) break;
      return {}; // runs a script file: judged as the command that names it
    }
    if (w === '-o' || w === '+o' || w === '-O' || w === '+O' || w === '--rcfile' || w === '--init-file') {
      k++;
      continue;
    }
    if (/^-[a-zA-Z]*c[a-zA-Z]*$/.test(w)) {
      const script = rest[k + 1];
      if (!script) return { dynamic: `${name} -c without a command` };
      return { script: script.value, scriptExpands: script.expands };
    }
  }
  return { dynamic: `${name} reads its commands from standard input` };
}

/** The words after a wrapper's own options (and `NAME=value` words for env). */
function afterOptions(rest: Word[], name: string): Word[] {
  const withValue = OPTIONS_WITH_VALUE[name] ?? new Set<string>();
  let k = 0;
  while (k < rest.length) {
    const w = rest[k]!.value;
    if (w === '--') return rest.slice(k + 1);
    if (!w.startsWith('-') || w === '-') {
      if (name === 'env' && ASSIGNMENT.test(w)) {
        k++;
        continue;
      }
      if (name === 'nice' && /^-?\d+$/.test(w)) {
        k++;
        continue;
      }
      break;
    }
    if (w.startsWith('--') && w.includes('=')) {
      k++;
      continue;
    }
    // `-uroot` carries its value; `-u root` takes the next word.
    const flag = w.startsWith('--') ? w : w.slice(0, 2);
    k += withValue.has(flag) && w.length === flag.length ? 2 : 1;
  }
  return rest.slice(k);
}

function optionValue(rest: Word[], names: string[]): Word | undefined {
  for (let k = 0; k < rest.length; k++) {
    const w = rest[k]!.value;
    if (names.includes(w)) return rest[k + 1];
    for (const n of names) if (n.startsWith('--') && w.startsWith(`${n}=`)) return { value: w.slice(n.length + 1), expands: rest[k]!.expands };
    if (/^-[a-zA-Z]+$/.test(w) && names.some((n) => n.length === 2 && w.endsWith(n[1]!) && w.length > 2)) return rest[k + 1];
  }
  return undefined;
}
