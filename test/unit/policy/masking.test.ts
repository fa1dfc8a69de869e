import { beforeAll, describe, expect, it } from 'vitest';
import {
  DETECTORS,
  columnMatches,
  detectorsFor,
  hashValue,
  maskDerivedJson,
  maskJsonText,
  maskText,
  maskTextBytes,
  maskWhole,
  partialMask,
  type DetectorName,
  type MaskPlan,
} from '../../../src/policy/masking.js';
import { outputColumnMasks } from '../../../src/policy/output-columns.js';
import { initPolicyEngine } from '../../../src/policy/sql-ast.js';

const found = (detector: DetectorName, text: string) => DETECTORS[detector](text).map(([s, e]) => text.slice(s, e));

describe('detectors', () => {
  it.each<[DetectorName, string, string[]]>([
    ['email', 'mail alice.smith+tag@example.co.uk now', ['alice.smith+tag@example.co.uk']],
    ['email', 'write to bob@example.com.', ['bob@example.com']],
    ['credit_card', 'card 4111 1111 1111 1111 exp', ['4111 1111 1111 1111']],
    ['credit_card', '4111-1111-1111-1111', ['4111-1111-1111-1111']],
    ['credit_card', 'amex 378282246310005', ['378282246310005']],
    ['credit_card', 'order 12 card 5555555555554444', ['5555555555554444']],
    ['us_ssn', 'ssn 123-45-6789.', ['123-45-6789']],
    ['phone', 'call +1 (415) 555-0132 today', ['+1 (415) 555-0132']],
    ['phone', 'call (415) 555-0132', ['(415) 555-0132']],
    ['phone', '415-555-0132 or 415.555.0133', ['415-555-0132', '415.555.0133']],
    ['phone', 'uk +442079460958', ['+442079460958']],
    ['iban', 'pay DE89 3704 0044 0532 0130 00 now', ['DE89 3704 0044 0532 0130 00']],
    ['iban', 'GB82WEST12345698765432', ['GB82WEST12345698765432']],
    ['ipv4', 'from 192.168.1.20:5432', ['192.168.1.20']],
    ['ipv6', 'from 2001:db8::8a2e:370:7334 and fe80::1', ['2001:db8::8a2e:370:7334', 'fe80::1']],
    ['ipv6', '::ffff:192.0.2.1', ['::ffff:192.0.2.1']],
    [
      'jwt',
      'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end',
      ['eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl'],
    ],
    ['aws_access_key', 'key AKIAIOSFODNN7EXAMPLE', ['AKIAIOSFODNN7EXAMPLE']],
    ['aws_access_key', 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', ['wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY']],
    [
      'private_key',
      'x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- y',
      ['-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----'],
    ],
    ['secret_token', 'token ghp_' + 'a'.repeat(36) + ' ok', ['ghp_' + 'a'.repeat(36)]],
    ['secret_token', 'sk_live_4eC39HqLyjWDarjtT1zdp7dc', ['sk_live_4eC39HqLyjWDarjtT1zdp7dc']],
    ['secret_token', 'xoxb-1234-5678-abcdefghij', ['xoxb-1234-5678-abcdefghij']],
    ['secret_token', 'glpat-abcdefghij0123456789', ['glpat-abcdefghij0123456789']],
    ['secret_token', 'AIzaSyA-1234567890abcdefghijklmnopqrstu', ['AIzaSyA-1234567890abcdefghijklmnopqrstu']],
    ['secret_token', 'github_pat_11ABCDEFG0123456789_abcdefghijklmnop', ['github_pat_11ABCDEFG0123456789_abcdefghijklmnop']],
  ])('%s finds %j', (detector, text, expected) => {
    expect(found(detector, text)).toEqual(expected);
  });

  it.each<[DetectorName, string]>([
    ['email', 'not an email: a@b, x@localhost, @example.com'],
    ['credit_card', '4111 1111 1111 1112'], // Luhn-invalid
    ['credit_card', '1234567890123'], // 13 digits, Luhn-invalid
    ['credit_card', '41111111111111111111111'], // a 23-digit number is no card
    ['us_ssn', '000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000'],
    ['us_ssn', '1123-45-6789 123-45-67890'],
    ['phone', '123456789'], // a 9-digit integer
    ['phone', 'id 1700000000'], // a unix timestamp is no NANP number
    ['phone', 'v1.2.3 2024-01-15'],
    ['iban', 'DE89 3704 0044 0532 0130 01'], // mod-97 invalid
    ['ipv4', '256.1.1.1 1.2.3 1.2.3.4.5'],
    ['ipv6', '12:30:45 std::vector 00:1a:2b:3c:4d:5e'],
    ['jwt', 'eyJub3QiOiJqc29uIGFsZyJ9.eyJ4IjoxfQ.sig'], // header has no alg
    ['aws_access_key', 'AKIAIOSFODNN7EXAMPL AKIAIOSFODNN7EXAMPLEX'],
    ['private_key', '-----BEGIN PUBLIC KEY-----\nMII\n-----END PUBLIC KEY-----'],
    ['secret_token', 'ghp_short sk_live_ xoxb-1'],
  ])('%s ignores the near miss %j', (detector, text) => {
    expect(found(detector, text)).toEqual([]);
  });

  it('masks a truncated private key to the end of the value', () => {
    expect(found('private_key', 'k: -----BEGIN PRIVATE KEY-----\nMIIEv')).toEqual(['-----BEGIN PRIVATE KEY-----\nMIIEv']);
  });

  it.each<[string, string]>([
    ['digits', '1'.repeat(1_000_000)],
    ['digits and spaces', '4 '.repeat(500_000)],
    ['at signs', 'a@'.repeat(500_000)],
    ['local part', 'a'.repeat(1_000_000) + '@'],
    ['jwt prefixes', 'eyJ'.repeat(333_333)],
    ['jwt segments', ('eyJ' + 'a'.repeat(10) + '.').repeat(70_000)],
    ['hex and colons', 'ab:'.repeat(333_333)],
    ['iban-like', 'DE89 '.repeat(200_000)],
    ['dots', '1.'.repeat(500_000)],
    ['pem headers', '-----BEGIN '.repeat(90_000)],
    ['token prefixes', 'ghp_'.repeat(250_000)],
  ])('finishes on a 1 MB adversarial value (%s)', (_name, value) => {
    // A detector that backtracks without bound never returns here (the test's timeout is the guard); how fast
    // the detectors are is measured by the benchmark, not asserted on a machine that may be busy.
    const all = Object.keys(DETECTORS) as DetectorName[];
    const { text } = maskText(value, all, 'redact', 'k');
    // Every hit was found in one pass: masking the output again finds nothing more.
    expect(maskText(text!, all, 'redact', 'k')).toEqual({ text, hits: {} });
  }, 120_000);
});

describe('detector pre-filters on the raw bytes', () => {
  const filtered: DetectorName[] = ['email', 'credit_card'];
  /** A detector the pre-filter leaves out must find nothing in the decoded value. */
  const skipsOnlyWhatFindsNothing = (text: string) => {
    const kept = detectorsFor(Buffer.from(text, 'utf8'), filtered);
    for (const d of filtered) if (!kept.includes(d)) expect(DETECTORS[d](text), `${d} in ${JSON.stringify(text)}`).toEqual([]);
  };

  it('never skips a detector on a value it matches: cards split by spaces or dashes, non-ASCII around, emails', () => {
    for (const text of [
      '4111 1111 1111 1111', '4111-1111-1111-1111', 'é4111111111111111é', 'card:4111111111111111.', '37828224631000 5',
      'a@b.co', 'ü@ex.ample.com', 'mail me: ada@example.com!', '\u0040', '4111 1111 1111 1111 ada@example.com',
    ]) {
      expect(detectorsFor(Buffer.from(text, 'utf8'), filtered).length).toBeGreaterThan(0);
      skipsOnlyWhatFindsNothing(text);
    }
    expect(detectorsFor(Buffer.from('4111 1111 1111 1111'), filtered)).toEqual(['credit_card']);
    expect(detectorsFor(Buffer.from('customer7@example.com'), filtered)).toEqual(['email']);
    expect(detectorsFor(Buffer.from('c4ca4238a0b923820dcc509a6f75849b'), filtered)).toEqual([]);
  });

  it('agrees with the detectors over many generated values', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const alphabet = ['0', '1', '4', '5', '9', ' ', '-', '@', '.', 'a', 'co', 'é', '\uFFFD', '  ', '--'];
    for (let n = 0; n < 20_000; n++) {
      let text = '';
      const length = Math.floor(random() * 40);
      for (let i = 0; i < length; i++) text += random() < 0.6 ? String(Math.floor(random() * 10)) : alphabet[Math.floor(random() * alphabet.length)];
      skipsOnlyWhatFindsNothing(text);
    }
  });
});

describe('masking a value where it lies in a message (maskTextBytes)', () => {
  const detectors: DetectorName[] = ['email', 'credit_card', 'us_ssn', 'private_key'];
  /** The same answer as maskText on the decoded value (undefined: unchanged), whatever is around the value. */
  const agrees = (value: Buffer, strategy: 'redact' | 'partial' | 'hash' | 'null') => {
    // Bytes around the value that every detector would react to: they must not leak into its judgement.
    const message = Buffer.concat([Buffer.from('4111111111111111 @ '), value, Buffer.from(' 4111 1111 1111 1111 x@example.com')]);
    const start = 19;
    const expected = maskText(value.toString('utf8'), detectors, strategy, 'k').text;
    const got = maskTextBytes(message, start, start + value.length, detectors, strategy, 'k');
    expect(got === undefined ? value.toString('utf8') : got, JSON.stringify(value.toString('utf8'))).toBe(expected);
    expect(got === undefined).toBe(expected === value.toString('utf8'));
  };

  it('masks hits at the start, the end and across the whole value, in ASCII and in multi-byte UTF-8', () => {
    for (const text of [
      'ada@example.com', 'ada@example.com trailing', 'leading ada@example.com', '4111 1111 1111 1111', 'card 4111111111111111',
      'é ada@example.com é', 'ünïcödé ada@example.com', 'ada@example.com 🙂', '日本 4111-1111-1111-1111 日本', '123-45-6789',
      '-----BEGIN RSA PRIVATE KEY-----\nÄÖÜ\n-----END RSA PRIVATE KEY-----', 'nothing here', '', 'é', '@', '4111',
    ]) {
      for (const strategy of ['redact', 'partial', 'hash', 'null'] as const) agrees(Buffer.from(text, 'utf8'), strategy);
    }
  });

  it('reads invalid UTF-8 as the decoder does (U+FFFD), never as Latin-1', () => {
    const invalid = [Buffer.from([0xff, 0x20, 0x61, 0x40, 0x62, 0x2e, 0x63, 0x6f]), Buffer.from([0xc3, 0x61, 0x40, 0x62, 0x2e, 0x63, 0x6f, 0xe9])];
    for (const value of invalid) for (const strategy of ['redact', 'partial', 'hash'] as const) agrees(value, strategy);
    // Partial masking of a span next to a multi-byte letter: the letter is counted once, as in the decoded text.
    agrees(Buffer.from('éa@example.com', 'utf8'), 'partial');
  });

  it('agrees with maskText over many generated values', () => {
    let seed = 11;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const alphabet = ['0', '4', '1', ' ', '-', '@', '.', 'a', 'co', 'é', '日', '\uFFFD', 'example', '4111 1111 1111 1111'];
    for (let n = 0; n < 5_000; n++) {
      let text = '';
      const length = Math.floor(random() * 30);
      for (let i = 0; i < length; i++) text += alphabet[Math.floor(random() * alphabet.length)];
      agrees(Buffer.from(text, 'utf8'), n % 2 === 0 ? 'redact' : 'partial');
    }
  });
});

describe('strategies', () => {
  const all: DetectorName[] = ['email', 'credit_card', 'us_ssn'];

  it('redacts with the detector name', () => {
    expect(maskText('mail bob@example.com, card 4111111111111111', all, 'redact', 'k')).toEqual({
      text: 'mail [REDACTED:email], card [REDACTED:credit_card]',
      hits: { email: 1, credit_card: 1 },
    });
  });

  it('keeps the same characters with partial on ASCII text as on any text (its fast path agrees with the general one)', () => {
    let seed = 5;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const alphabet = ['a', 'Z', '0', '9', '-', ' ', '.', '@', '_', '1', 'x'];
    for (let n = 0; n < 5_000; n++) {
      let text = '';
      const length = Math.floor(random() * 24);
      for (let i = 0; i < length; i++) text += alphabet[Math.floor(random() * alphabet.length)];
      // A non-ASCII character that is neither letter nor digit sends the text down the general path, unchanged.
      expect(partialMask(text) + '\u2014', JSON.stringify(text)).toBe(partialMask(text + '\u2014'));
    }
  });

  it('keeps the last four characters and separators with partial', () => {
    expect(maskText('4111-1111-1111-1111', all, 'partial', 'k').text).toBe('****-****-****-1111');
    expect(partialMask('123-45-6789')).toBe('***-**-6789');
    expect(partialMask('abc')).toBe('***');
  });

  it('hashes stably under one key and differently under another', () => {
    const a = hashValue('bob@example.com', 'key-1');
    expect(a).toMatch(/^h_[0-9a-f]{16}$/);
    expect(hashValue('bob@example.com', 'key-1')).toBe(a);
    expect(hashValue('bob@example.com', 'key-2')).not.toBe(a);
    expect(hashValue('eve@example.com', 'key-1')).not.toBe(a);
    expect(maskText('to bob@example.com', all, 'hash', 'key-1').text).toBe(`to ${a}`);
    expect(maskWhole('bob@example.com', 'hash', 'key-1')).toBe(a);
    expect(() => hashValue('x', '')).toThrow(/key/);
  });

  it('signals SQL NULL with the null strategy', () => {
    expect(maskText('ssn 123-45-6789', all, 'null', 'k')).toEqual({ text: null, hits: { us_ssn: 1 } });
    expect(maskText('nothing here', all, 'null', 'k')).toEqual({ text: 'nothing here', hits: {} });
    expect(maskWhole('x', 'null', 'k')).toBeNull();
  });

  it('redacts whole values', () => {
    expect(maskWhole('anything', 'redact', 'k')).toBe('[REDACTED]');
  });
});

describe('column matching', () => {
  const plan = { columns: ['email', 'customers.ssn', '*.card', 'billing.accounts.iban'] };
  it.each<[object, boolean]>([
    [{ column: 'email' }, true],
    [{ column: 'EMAIL', table: 'users' }, true],
    [{ column: 'ssn', table: 'customers' }, true],
    [{ column: 'ssn', table: 'public.customers' }, true],
    [{ column: 'ssn', table: 'employees' }, false],
    [{ column: 'ssn' }, true], // table unknown: masked
    [{ column: 'card', table: 'anything' }, true],
    [{ column: 'iban', schema: 'billing', table: 'accounts' }, true],
    [{ column: 'iban', schema: 'public', table: 'accounts' }, false],
    [{ column: 'name', table: 'customers' }, false],
  ])('%j → %s', (source, expected) => {
    expect(columnMatches(plan, source as { column: string })).toBe(expected);
  });
});

describe('JSON masking', () => {
  const plan: MaskPlan = { rules: ['pii'], columns: ['email', 'ssn'], detectors: ['credit_card', 'email', 'phone'], strategy: 'redact' };

  it('masks values under masked keys and detector hits everywhere, returning valid JSON', () => {
    const json = JSON.stringify([
      { id: 1, email: 'bob@example.com', note: 'card 4111111111111111', nested: { ssn: ['123-45-6789', 7] } },
      { id: 2, email: null, contact: { alt: 'eve@example.com' } },
    ]);
    const r = maskJsonText(json, plan, 'k');
    const parsed = JSON.parse(r.text!);
    expect(parsed).toEqual([
      { id: 1, email: '[REDACTED]', note: 'card [REDACTED:credit_card]', nested: { ssn: ['[REDACTED]', '[REDACTED]'] } },
      { id: 2, email: null, contact: { alt: '[REDACTED:email]' } },
    ]);
    expect(r.hits).toEqual({ column: 3, credit_card: 1, email: 1 });
  });

  it('keeps big numbers exact and masks card numbers written as numbers', () => {
    const r = maskJsonText('{"n": 12345678901234567890123, "c": 4111111111111111}', plan, 'k');
    expect(r.text).toBe('{"n":12345678901234567890123,"c":"[REDACTED:credit_card]"}');
  });

  it('masks keys that hold data (json_object_agg)', () => {
    const r = maskJsonText('{"bob@example.com": 3}', plan, 'k');
    expect(JSON.parse(r.text!)).toEqual({ '[REDACTED:email]': 3 });
  });

  it('uses JSON null for the null strategy', () => {
    const r = maskJsonText('{"email":"bob@example.com","x":"eve@example.com"}', { ...plan, strategy: 'null' }, 'k');
    expect(JSON.parse(r.text!)).toEqual({ email: null, x: null });
  });

  it('falls back to text detectors for invalid JSON', () => {
    expect(maskJsonText('{"email": bob@example.com', plan, 'k').text).toBe('{"email": [REDACTED:email]');
  });

  it('masks JSON nested too deeply to walk as a whole', () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    expect(maskJsonText(deep, plan, 'k').text).toBe('"[REDACTED]"');
  });
});

describe('maskDerivedJson (JSON computed from a masked column)', () => {
  beforeAll(() => initPolicyEngine());
  const plan: MaskPlan = { rules: ['pii'], columns: ['email', 'ssn'], detectors: ['email'], strategy: 'redact' };
  const shapeOf = (sql: string) => {
    const cols = outputColumnMasks(sql, plan);
    if (cols === 'unknown') throw new Error('unknown');
    return cols[0].json;
  };

  it('masks the members the SQL built from masked columns, keeping keys, numbers and booleans', () => {
    const shape = shapeOf("select jsonb_build_object('contact', email, 'n', id, 'ok', true, 'who', jsonb_build_object('s', ssn, 'k', 'x')) from customers");
    const json = '{"contact": "a@example.com", "n": 1, "ok": true, "who": {"k": "x", "s": 536224871}}';
    expect(JSON.parse(maskDerivedJson(json, plan, 'k', shape).text!)).toEqual({ contact: '[REDACTED]', n: 1, ok: true, who: { k: 'x', s: '[REDACTED]' } });
  });

  it('follows json_agg of built objects', () => {
    const shape = shapeOf("select json_agg(json_build_object('m', email, 'id', id)) from customers");
    const json = '[{"m":"a@example.com","id":1},{"m":null,"id":2}]';
    expect(JSON.parse(maskDerivedJson(json, plan, 'k', shape).text!)).toEqual([{ m: '[REDACTED]', id: 1 }, { m: null, id: 2 }]);
  });

  it('masks every string and number when the SQL does not show where the masked value went', () => {
    expect(shapeOf('select json_build_array(email, id, true) from customers')).toBeUndefined();
    expect(JSON.parse(maskDerivedJson('["a@example.com", 7, true, null]', plan, 'k').text!)).toEqual(['[REDACTED]', '[REDACTED]', true, null]);
  });

  it('replaces the whole value when its keys are made from data', () => {
    const shape = shapeOf('select json_object_agg(email, id) from customers');
    expect(shape).toEqual({ kind: 'data-keys' });
    expect(maskDerivedJson('{"a@example.com": 1}', plan, 'k', shape).text).toBe('"[REDACTED]"');
  });

  it('masks by the shape only when the value fits it; otherwise every leaf', () => {
    const shape = shapeOf("select jsonb_build_object('contact', email) from customers");
    expect(JSON.parse(maskDerivedJson('{"other": "x", "n": 5}', plan, 'k', shape).text!)).toEqual({ other: '[REDACTED]', n: '[REDACTED]' });
  });

  it('keeps the column-named keys path for rows (json_agg(c))', () => {
    expect(JSON.parse(maskDerivedJson('[{"name":"Alice","email":"a@example.com"}]', plan, 'k').text!)).toEqual([{ name: 'Alice', email: '[REDACTED]' }]);
  });
});
