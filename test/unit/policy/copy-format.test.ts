import { beforeAll, describe, expect, it } from 'vitest';
import { initPolicyEngine } from '../../../src/policy/sql-ast.js';
import { copyOutputColumns, decodeCopyField, encodeCopyField, maskCopyRow, splitCopyRow, type CopyFormat } from '../../../src/policy/copy-format.js';

const plan = { columns: ['email', 'customers.ssn'] };
const text: CopyFormat = { csv: false, delimiter: '\t', quote: '"', escape: '"', null: '\\N', header: false };
const csv: CopyFormat = { csv: true, delimiter: ',', quote: '"', escape: '"', null: '', header: false };

beforeAll(async () => {
  await initPolicyEngine();
});

describe('COPY columns under column rules', () => {
  it('knows the columns of a copied query or of a column list, and not of a whole table', () => {
    expect(copyOutputColumns('copy (select name, lower(email) as e from customers) to stdout', plan)).toEqual({ masked: [false, true], format: text });
    expect(copyOutputColumns('copy customers (name, ssn) to stdout with (format csv, header)', plan)).toEqual({ masked: [false, true], format: { ...csv, header: true } });
    expect(copyOutputColumns('copy orders (id, ssn) to stdout', plan)).toEqual({ masked: [false, false], format: text });
    expect(copyOutputColumns('copy customers to stdout', plan)).toBe('unknown');
    expect(copyOutputColumns('copy (select * from customers) to stdout', plan)).toBe('unknown');
    expect(copyOutputColumns('copy customers from stdin', plan)).toBe('unknown');
    expect(copyOutputColumns('copy (select 1) to stdout with (format binary)', plan)).toBe('unknown');
    expect(copyOutputColumns("select 1; copy (select email from customers) to stdout with (delimiter '|', null 'NULL')", plan, 1)).toEqual({
      masked: [true], format: { ...text, delimiter: '|', null: 'NULL' },
    });
  });
});

describe('COPY rows', () => {
  it('splits and decodes text rows with escapes and NULL', () => {
    const row = 'a\\tb\tx\\\\y\t\\N\tline\\none';
    expect(splitCopyRow(row, text)).toEqual(['a\\tb', 'x\\\\y', '\\N', 'line\\none']);
    expect(splitCopyRow(row, text)!.map((f) => decodeCopyField(f, text))).toEqual(['a\tb', 'x\\y', null, 'line\none']);
    expect(encodeCopyField('a\tb\\c\nd', text)).toBe('a\\tb\\\\c\\nd');
    expect(encodeCopyField('a|b', { ...text, delimiter: '|' })).toBe('a\\|b');
    expect(splitCopyRow('ends in \\', text)).toBeUndefined();
  });

  it('splits and decodes CSV rows with quotes, doubled quotes, delimiters and newlines inside', () => {
    const row = 'plain,"with, comma","say ""hi""","two\nlines",';
    expect(splitCopyRow(row, csv)).toEqual(['plain', '"with, comma"', '"say ""hi"""', '"two\nlines"', '']);
    expect(splitCopyRow(row, csv)!.map((f) => decodeCopyField(f, csv))).toEqual(['plain', 'with, comma', 'say "hi"', 'two\nlines', null]);
    expect(encodeCopyField('say "hi", ok', csv)).toBe('"say ""hi"", ok"');
    expect(encodeCopyField('', csv)).toBe('""');
    expect(encodeCopyField(null, csv)).toBe('');
    expect(splitCopyRow('"never closed', csv)).toBeUndefined();
    expect(splitCopyRow('a"b,c', csv)).toBeUndefined();
  });

  it('masks the flagged fields whole and writes the row back in its format; a row of another shape is refused', () => {
    const columns = { masked: [false, true, false], format: csv };
    const mask = (v: string) => `<${v.length}>`;
    expect(maskCopyRow('1,"ada@example.com, work",note\n', columns, mask)).toBe('1,<21>,note\n');
    expect(maskCopyRow('2,,note\n', columns, mask)).toBe('2,,note\n');
    expect(maskCopyRow('3,x\n', columns, mask)).toBeUndefined();
    expect(maskCopyRow('1\tsecret\tz\n', { masked: [false, true, false], format: text }, () => null)).toBe('1\t\\N\tz\n');
    expect(maskCopyRow('1\tsecret\tz\n', { masked: [false, true, false], format: text }, () => 'a\tb')).toBe('1\ta\\tb\tz\n');
  });
});
