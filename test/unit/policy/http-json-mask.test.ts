import { describe, expect, it } from 'vitest';
import { jsonPathMatches, maskJsonBody, parseJsonPath, JsonPathError } from '../../../src/policy/http-json-mask.js';

const spec = (paths: string[], detectors: Array<'email' | 'credit_card'> = []) => ({ paths: paths.map(parseJsonPath), detectors, strategy: 'redact' as const });

describe('JSON paths', () => {
  it('parses and matches members, indexes, wildcards and descent', () => {
    const p = parseJsonPath('$.users[*].email');
    expect(jsonPathMatches(p, ['users', 0, 'email'])).toBe(true);
    expect(jsonPathMatches(p, ['users', 0, 'name'])).toBe(false);
    expect(jsonPathMatches(p, ['users', 'email'])).toBe(false);
    expect(jsonPathMatches(parseJsonPath("$['a b'][2]"), ['a b', 2])).toBe(true);
    expect(jsonPathMatches(parseJsonPath('$..password'), ['a', 3, 'b', 'password'])).toBe(true);
    expect(jsonPathMatches(parseJsonPath('$..password'), ['password'])).toBe(true);
    expect(jsonPathMatches(parseJsonPath('$.items[*].data.*'), ['items', 1, 'data', 'token'])).toBe(true);
  });

  it('rejects what it cannot read', () => {
    for (const bad of ['users.email', '$.', '$[abc]', '$.a[', '$..']) expect(() => parseJsonPath(bad)).toThrow(JsonPathError);
  });
});

describe('maskJsonBody', () => {
  it('masks values at a path whole (objects through and through), keeping numbers exact elsewhere', () => {
    const r = maskJsonBody('{"users":[{"email":"a@x.io","id":12345678901234567890,"addr":{"city":"Oslo","zip":1234}}],"n":1}', spec(['$.users[*].email', '$.users[*].addr']), 'k');
    expect(r.text).toBe('{"users":[{"email":"[REDACTED]","id":12345678901234567890,"addr":{"city":"[REDACTED]","zip":"[REDACTED]"}}],"n":1}');
    expect(r.hits).toEqual({ path: 3 });
  });

  it('runs detectors on every value, including numbers and keys', () => {
    const r = maskJsonBody('{"card":4111111111111111,"note":"mail a@x.io","b@y.io":true}', spec([], ['email', 'credit_card']), 'k');
    expect(r.text).not.toMatch(/4111111111111111|a@x\.io|b@y\.io/);
    expect(JSON.parse(r.text).card).toBe('[REDACTED:credit_card]');
  });

  it('leaves a body without hits byte for byte; masks non-JSON as text', () => {
    const text = '{ "a" : [1, 2.5e3, null] }';
    expect(maskJsonBody(text, spec(['$.b']), 'k').text).toBe(text);
    const r = maskJsonBody('not json a@x.io', spec(['$.a'], ['email']), 'k');
    expect(r.json).toBe(false);
    expect(r.text).toBe('not json [REDACTED:email]');
  });
});
