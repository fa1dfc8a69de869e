/**
 * Content detectors: each finds the spans of one kind of sensitive value in a string.
 * They are hand-written scanners anchored on a pivot (an `@`, a digit after a non-digit, a fixed prefix) with
 * bounded look-around, so a 1 MB adversarial value costs linear time — no backtracking regular expressions.
 */
import type { DetectorName } from './mask-plan.js';

export type Span = [start: number, end: number];
export type Detector = (text: string) => Span[];

const isDigit = (c: number) => c >= 48 && c <= 57;
const isUpper = (c: number) => c >= 65 && c <= 90;
const isLower = (c: number) => c >= 97 && c <= 122;
const isAlpha = (c: number) => isUpper(c) || isLower(c);
const isAlnum = (c: number) => isDigit(c) || isAlpha(c);
const isHex = (c: number) => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
const isBase64Url = (c: number) => isAlnum(c) || c === 45 || c === 95; // - _
const code = (s: string, i: number) => (i >= 0 && i < s.length ? s.charCodeAt(i) : -1);

// ---------------------------------------------------------------- email
const LOCAL = 1; // a letter, a digit or . _ % + -
const DOMAIN = 2; // a letter, a digit or . -
const ALPHA = 4;
/**
 * The email classes of every UTF-16 code unit (non-ASCII ones are in none), read by index: the scanner runs over
 * every value of a column under the email detector, so it looks a class up instead of testing ranges.
 */
const EMAIL_CLASS = new Uint8Array(65536);
for (let c = 0; c < 128; c++) {
  if (isAlnum(c) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45) EMAIL_CLASS[c] |= LOCAL;
  if (isAlnum(c) || c === 46 || c === 45) EMAIL_CLASS[c] |= DOMAIN;
  if (isAlpha(c)) EMAIL_CLASS[c] |= ALPHA;
}

export const detectEmail: Detector = (text) => {
  const spans: Span[] = [];
  let at = text.indexOf('@');
  while (at !== -1) {
    let start = at;
    while (start > 0 && at - start < 64 && (EMAIL_CLASS[text.charCodeAt(start - 1)] & LOCAL) !== 0) start--;
    while (start < at && text.charCodeAt(start) === 46) start++; // no leading dot
    let end = at + 1;
    while (end < text.length && end - at <= 253 && (EMAIL_CLASS[text.charCodeAt(end)] & DOMAIN) !== 0) end++;
    while (end > at + 1 && (text.charCodeAt(end - 1) === 46 || text.charCodeAt(end - 1) === 45)) end--; // sentence dot
    if (start < at && text.charCodeAt(at - 1) !== 46 && validDomain(text, at + 1, end)) spans.push([start, end]);
    at = text.indexOf('@', Math.max(at + 1, end));
  }
  return spans;
};

/** text[from, to) as a domain: two labels or more, none empty or over 63, the last at least two letters. */
function validDomain(text: string, from: number, to: number): boolean {
  let labels = 0;
  let labelStart = from;
  for (let i = from; i <= to; i++) {
    if (i < to && text.charCodeAt(i) !== 46) continue;
    const length = i - labelStart;
    if (length === 0 || length > 63) return false;
    labels++;
    if (i === to) {
      if (labels < 2 || length < 2) return false;
      for (let k = labelStart; k < to; k++) if ((EMAIL_CLASS[text.charCodeAt(k)] & ALPHA) === 0) return false;
      return true;
    }
    labelStart = i + 1;
  }
  return false;
}

// ---------------------------------------------------------------- digit groups (cards)
interface Group {
  start: number;
  end: number;
}

/** Digit groups joined by single spaces or dashes, starting at `i` (a digit after a non-digit). */
function digitGroups(text: string, i: number): Group[] {
  const groups: Group[] = [];
  let pos = i;
  for (;;) {
    const start = pos;
    while (pos < text.length && isDigit(code(text, pos))) pos++;
    groups.push({ start, end: pos });
    const sep = code(text, pos);
    if ((sep === 32 || sep === 45) && isDigit(code(text, pos + 1))) pos++;
    else return groups;
  }
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

export const detectCreditCard: Detector = (text) => {
  const spans: Span[] = [];
  let i = 0;
  while (i < text.length) {
    if (!isDigit(code(text, i)) || isDigit(code(text, i - 1))) {
      i++;
      continue;
    }
    const groups = digitGroups(text, i);
    let a = 0;
    while (a < groups.length) {
      let best = -1;
      let digits = '';
      for (let b = a; b < groups.length; b++) {
        digits += text.slice(groups[b].start, groups[b].end);
        if (digits.length > 19) break;
        if (digits.length >= 13 && luhnValid(digits) && digits[0] !== '0') best = b;
      }
      if (best >= 0) {
        spans.push([groups[a].start, groups[best].end]);
        a = best + 1;
      } else a++;
    }
    i = groups[groups.length - 1].end;
  }
  return spans;
};

// ---------------------------------------------------------------- US SSN
export const detectUsSsn: Detector = (text) => {
  const spans: Span[] = [];
  for (let i = 0; i + 11 <= text.length; i++) {
    if (!isDigit(code(text, i))) continue;
    const prev = code(text, i - 1);
    if (isDigit(prev) || prev === 45) continue;
    const shape = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1];
    let ok = true;
    for (let k = 0; k < 11 && ok; k++) {
      const c = code(text, i + k);
      ok = shape[k] === 1 ? isDigit(c) : c === 45;
    }
    if (!ok) continue;
    const next = code(text, i + 11);
    if (isDigit(next) || (next === 45 && isDigit(code(text, i + 12)))) continue;
    const area = text.slice(i, i + 3);
    const group = text.slice(i + 4, i + 6);
    const serial = text.slice(i + 7, i + 11);
    if (area === '000' || area === '666' || area[0] === '9' || group === '00' || serial === '0000') continue;
    spans.push([i, i + 11]);
    i += 10;
  }
  return spans;
};

// ---------------------------------------------------------------- phone
const isPhoneSep = (c: number) => c === 32 || c === 45 || c === 46; // space - .

/** Reads exactly `n` digits at `pos`; returns the position after them or -1. */
function digitsAt(text: string, pos: number, n: number): number {
  for (let k = 0; k < n; k++) if (!isDigit(code(text, pos + k))) return -1;
  return pos + n;
}

/** NANP: [1 sep] (ddd) ddd-dddd | ddd-ddd-dddd | ddd.ddd.dddd | ddd ddd dddd | dddddddddd; area/exchange 2–9. */
function nanpAt(text: string, i: number): number {
  let pos = i;
  if (code(text, pos) === 49 && isPhoneSep(code(text, pos + 1))) pos += 2; // "1-" country code
  else if (code(text, pos) === 49 && code(text, pos + 1) === 40) pos += 1; // "1(415)…"
  let areaStart: number;
  let sep = -1;
  if (code(text, pos) === 40) {
    areaStart = pos + 1;
    pos = digitsAt(text, pos + 1, 3);
    if (pos < 0 || code(text, pos) !== 41) return -1;
    pos++;
    if (isPhoneSep(code(text, pos))) pos++;
  } else {
    areaStart = pos;
    pos = digitsAt(text, pos, 3);
    if (pos < 0) return -1;
    if (isPhoneSep(code(text, pos))) sep = code(text, pos++);
  }
  const exchangeStart = pos;
  pos = digitsAt(text, pos, 3);
  if (pos < 0) return -1;
  if (isPhoneSep(code(text, pos))) {
    if (sep !== -1 && code(text, pos) !== sep) return -1;
    pos++;
  } else if (sep !== -1) return -1;
  pos = digitsAt(text, pos, 4);
  if (pos < 0) return -1;
  const areaFirst = code(text, areaStart);
  const exchangeFirst = code(text, exchangeStart);
  if (areaFirst < 50 || exchangeFirst < 50) return -1; // 2–9
  return pos;
}

/** E.164 written with a leading +: 8–15 digits, single separators or a parenthesised group between them. */
function e164At(text: string, i: number): number {
  let pos = i + 1;
  let digits = 0;
  let last = -1;
  let run = 0;
  while (pos < text.length && pos - i <= 24) {
    const c = code(text, pos);
    if (isDigit(c)) {
      digits++;
      run = 0;
      last = pos + 1;
    } else if (isPhoneSep(c) || c === 40 || c === 41) {
      if (++run > 2) break;
    } else break;
    pos++;
  }
  if (digits < 8 || digits > 15 || code(text, i + 1) === 48 || !isDigit(code(text, i + 1))) return -1;
  return last;
}

export const detectPhone: Detector = (text) => {
  const spans: Span[] = [];
  let i = 0;
  while (i < text.length) {
    const c = code(text, i);
    const prev = code(text, i - 1);
    if ((c === 43 || c === 40 || isDigit(c)) && !isAlnum(prev) && prev !== 43 && prev !== 46 && prev !== 45) {
      const end = c === 43 ? e164At(text, i) : nanpAt(text, i);
      if (end > 0 && !isAlnum(code(text, end)) && !(code(text, end) === 45 && isDigit(code(text, end + 1)))) {
        spans.push([i, end]);
        i = end;
        continue;
      }
    }
    i++;
  }
  return spans;
};

// ---------------------------------------------------------------- IBAN
export function ibanValid(iban: string): boolean {
  const s = iban.toUpperCase();
  if (s.length < 15 || s.length > 34) return false;
  const rearranged = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (let k = 0; k < rearranged.length; k++) {
    const c = rearranged.charCodeAt(k);
    if (isDigit(c)) rem = (rem * 10 + (c - 48)) % 97;
    else if (isUpper(c)) rem = (rem * 100 + (c - 55)) % 97;
    else return false;
  }
  return rem === 1;
}

export const detectIban: Detector = (text) => {
  const spans: Span[] = [];
  let i = 0;
  while (i + 4 <= text.length) {
    const ok =
      isUpper(code(text, i)) &&
      isUpper(code(text, i + 1)) &&
      isDigit(code(text, i + 2)) &&
      isDigit(code(text, i + 3)) &&
      !isAlnum(code(text, i - 1));
    if (!ok) {
      i++;
      continue;
    }
    // Chunks of alphanumerics joined by single spaces, at most 34 alphanumerics in all.
    const ends: number[] = [];
    let pos = i;
    let count = 0;
    for (;;) {
      while (pos < text.length && isAlnum(code(text, pos)) && count <= 34) {
        pos++;
        count++;
      }
      if (count > 34) break;
      ends.push(pos);
      if (code(text, pos) === 32 && isAlnum(code(text, pos + 1))) pos++;
      else break;
    }
    let found = -1;
    for (let k = ends.length - 1; k >= 0 && found < 0; k--) {
      if (isAlnum(code(text, ends[k]))) continue;
      const compact = text.slice(i, ends[k]).split(' ').join('');
      if (ibanValid(compact)) found = ends[k];
    }
    if (found > 0) {
      spans.push([i, found]);
      i = found;
    } else i++;
  }
  return spans;
};

// ---------------------------------------------------------------- IP addresses
export const detectIpv4: Detector = (text) => {
  const spans: Span[] = [];
  let i = 0;
  while (i < text.length) {
    const prev = code(text, i - 1);
    if (!isDigit(code(text, i)) || isDigit(prev) || prev === 46) {
      i++;
      continue;
    }
    let pos = i;
    let octets = 0;
    while (octets < 4) {
      const start = pos;
      while (pos - start < 3 && isDigit(code(text, pos))) pos++;
      if (pos === start || isDigit(code(text, pos)) || Number(text.slice(start, pos)) > 255) break;
      octets++;
      if (octets < 4) {
        if (code(text, pos) !== 46) break;
        pos++;
      }
    }
    const next = code(text, pos);
    if (octets === 4 && !isDigit(next) && !(next === 46 && isDigit(code(text, pos + 1)))) {
      spans.push([i, pos]);
      i = pos;
    } else {
      while (i < text.length && (isDigit(code(text, i)) || code(text, i) === 46)) i++;
    }
  }
  return spans;
};

export function ipv6Valid(s: string): boolean {
  let body = s;
  let extra = 0;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.')) {
    const v4 = s.slice(lastColon + 1);
    const found = detectIpv4(v4);
    if (found.length !== 1 || found[0][0] !== 0 || found[0][1] !== v4.length) return false;
    body = s.slice(0, lastColon + 1) + '0';
    extra = 1;
  }
  const halves = body.split('::');
  if (halves.length > 2) return false;
  const groups = halves.map((h) => (h === '' ? [] : h.split(':')));
  for (const g of groups.flat()) {
    if (g.length === 0 || g.length > 4) return false;
    for (let k = 0; k < g.length; k++) if (!isHex(g.charCodeAt(k))) return false;
  }
  const total = groups.flat().length + extra;
  return halves.length === 2 ? total <= 7 : total === 8;
}

export const detectIpv6: Detector = (text) => {
  const spans: Span[] = [];
  const inRun = (c: number) => isHex(c) || c === 58 || c === 46;
  let i = 0;
  while (i < text.length) {
    const c = code(text, i);
    if (!inRun(c) || isAlnum(code(text, i - 1)) || code(text, i - 1) === 58) {
      i++;
      continue;
    }
    let end = i;
    while (end < text.length && inRun(code(text, end))) end++;
    let candidate = text.slice(i, end);
    let cut = end;
    while (candidate.endsWith('.') || (candidate.endsWith(':') && !candidate.endsWith('::'))) {
      candidate = candidate.slice(0, -1);
      cut--;
    }
    if (!isAlnum(code(text, end)) && candidate.length <= 45 && ipv6Valid(candidate)) {
      const groups = candidate.split(/:+/).filter((g) => g.length > 0);
      const hexDigits = groups.join('').length;
      if (groups.length >= 2 || (candidate.includes('::') && hexDigits >= 4)) spans.push([i, cut]);
    }
    i = end;
  }
  return spans;
};

// ---------------------------------------------------------------- JWT
function base64UrlJson(segment: string): unknown {
  try {
    const b64 = segment.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    return undefined;
  }
}

export const detectJwt: Detector = (text) => {
  const spans: Span[] = [];
  let i = text.indexOf('eyJ');
  while (i !== -1) {
    let next = i + 3;
    if (!isBase64Url(code(text, i - 1))) {
      const seg = (from: number) => {
        let p = from;
        while (p < text.length && isBase64Url(code(text, p))) p++;
        return p;
      };
      const h = seg(i);
      next = h;
      if (code(text, h) === 46) {
        const p = seg(h + 1);
        if (p > h + 1 && code(text, p) === 46) {
          const s = seg(p + 1);
          const header = h - i <= 4096 ? base64UrlJson(text.slice(i, h)) : undefined;
          if (typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string') {
            spans.push([i, s]);
            next = s;
          }
        }
      }
    }
    i = text.indexOf('eyJ', next);
  }
  return spans;
};

// ---------------------------------------------------------------- AWS keys
const isAwsIdChar = (c: number) => isUpper(c) || isDigit(c);
const isBase64 = (c: number) => isAlnum(c) || c === 43 || c === 47 || c === 61; // + / =

export const detectAwsAccessKey: Detector = (text) => {
  const spans: Span[] = [];
  for (const prefix of ['AKIA', 'ASIA']) {
    let i = text.indexOf(prefix);
    while (i !== -1) {
      let ok = !isAlnum(code(text, i - 1)) && !isAlnum(code(text, i + 20));
      for (let k = 4; k < 20 && ok; k++) ok = isAwsIdChar(code(text, i + k));
      if (ok) spans.push([i, i + 20]);
      i = text.indexOf(prefix, i + 4);
    }
  }
  // A 40-character base64 secret after an aws_secret… label: `aws_secret_access_key = "…"`.
  const lower = text.toLowerCase();
  let k = lower.indexOf('aws_secret');
  while (k !== -1) {
    let pos = k + 10;
    for (let n = 0; n < 30 && (isAlpha(code(text, pos)) || code(text, pos) === 95); n++) pos++;
    for (let n = 0; n < 6; n++) {
      const c = code(text, pos);
      if (c === 32 || c === 9 || c === 34 || c === 39 || c === 58 || c === 61) pos++;
      else break;
    }
    let end = pos;
    while (end < text.length && end - pos <= 40 && isBase64(code(text, end))) end++;
    if (end - pos === 40) spans.push([pos, end]);
    k = lower.indexOf('aws_secret', k + 10);
  }
  return spans;
};

// ---------------------------------------------------------------- PEM private keys
export const detectPrivateKey: Detector = (text) => {
  const spans: Span[] = [];
  let i = text.indexOf('-----BEGIN ');
  while (i !== -1) {
    const labelEnd = text.indexOf('-----', i + 11);
    let next = i + 11;
    if (labelEnd !== -1 && labelEnd - i <= 80) {
      const label = text.slice(i + 11, labelEnd);
      if (label.endsWith('PRIVATE KEY')) {
        const footer = `-----END ${label}-----`;
        const f = text.indexOf(footer, labelEnd + 5);
        // A truncated block is still a key: mask to the end of the value.
        const end = f === -1 ? text.length : f + footer.length;
        spans.push([i, end]);
        next = end;
      }
    }
    i = text.indexOf('-----BEGIN ', next);
  }
  return spans;
};

// ---------------------------------------------------------------- token prefixes
interface TokenShape {
  prefix: string;
  min: number;
  char: (c: number) => boolean;
}
const alnumOrUnderscore = (c: number) => isAlnum(c) || c === 95;
const alnumOrDash = (c: number) => isAlnum(c) || c === 45;
const TOKEN_SHAPES: TokenShape[] = [
  ...['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_'].map((prefix) => ({ prefix, min: 30, char: isAlnum })),
  { prefix: 'github_pat_', min: 22, char: alnumOrUnderscore },
  ...['sk_live_', 'sk_test_', 'rk_live_', 'rk_test_'].map((prefix) => ({ prefix, min: 10, char: isAlnum })),
  ...['xoxb-', 'xoxp-', 'xoxa-', 'xoxs-', 'xoxr-', 'xoxe-'].map((prefix) => ({ prefix, min: 10, char: alnumOrDash })),
  { prefix: 'glpat-', min: 20, char: isBase64Url },
  { prefix: 'AIza', min: 30, char: isBase64Url },
  ...['sk-proj-', 'sk-ant-'].map((prefix) => ({ prefix, min: 20, char: isBase64Url })),
];

export const detectSecretToken: Detector = (text) => {
  const spans: Span[] = [];
  for (const shape of TOKEN_SHAPES) {
    let i = text.indexOf(shape.prefix);
    while (i !== -1) {
      let end = i + shape.prefix.length;
      while (end < text.length && shape.char(code(text, end))) end++;
      if (!isAlnum(code(text, i - 1)) && end - i - shape.prefix.length >= shape.min) spans.push([i, end]);
      i = text.indexOf(shape.prefix, Math.max(end, i + 1));
    }
  }
  return spans;
};

export const DETECTORS: Record<DetectorName, Detector> = {
  email: detectEmail,
  credit_card: detectCreditCard,
  us_ssn: detectUsSsn,
  phone: detectPhone,
  iban: detectIban,
  ipv4: detectIpv4,
  ipv6: detectIpv6,
  jwt: detectJwt,
  aws_access_key: detectAwsAccessKey,
  private_key: detectPrivateKey,
  secret_token: detectSecretToken,
};

// ---------------------------------------------------------------- pre-filters on UTF-8 bytes

/**
 * What one pass over a value's UTF-8 bytes (`bytes[start, end)`, so a value can be judged where it lies in a
 * message) tells before the value is decoded: which detectors could find anything in it, and whether it is ASCII.
 * Every byte a detector pivots on here is ASCII, and in UTF-8 an ASCII byte is always that character (never part
 * of a longer sequence, nor of the U+FFFD an invalid sequence decodes to), so the answer holds for the decoded
 * string. A bit of BYTE_TRAIT that is not set means the detectors that need it (BYTE_TRAIT_NEEDED) find nothing.
 */
export const BYTE_TRAIT = {
  /** An `@`: detectEmail pivots on one. */
  at: 1,
  /**
   * 13 digits in one chain of digit groups joined by single spaces or dashes (see digitGroups): detectCreditCard
   * finds no card number in a value whose longest such chain is shorter.
   */
  cardDigits: 2,
  /** A byte outside ASCII: the value decodes to more than its bytes one for one. */
  nonAscii: 4,
} as const;

/** The trait a detector needs to find anything; detectors not named always run. */
export const BYTE_TRAIT_NEEDED: Partial<Record<DetectorName, number>> = {
  email: BYTE_TRAIT.at,
  credit_card: BYTE_TRAIT.cardDigits,
};

export function byteTraits(bytes: Uint8Array, start: number, end: number): number {
  let traits = 0;
  let chain = 0;
  for (let i = start; i < end; i++) {
    const c = bytes[i];
    if (c >= 48 && c <= 57) {
      if (++chain >= 13) traits |= BYTE_TRAIT.cardDigits;
      continue;
    }
    if (c === 64) traits |= BYTE_TRAIT.at;
    else if (c > 127) traits |= BYTE_TRAIT.nonAscii;
    // A single space or dash between digits continues the chain; anything else ends it.
    if (!((c === 32 || c === 45) && chain > 0 && i + 1 < end && bytes[i + 1] >= 48 && bytes[i + 1] <= 57)) chain = 0;
  }
  return traits;
}
