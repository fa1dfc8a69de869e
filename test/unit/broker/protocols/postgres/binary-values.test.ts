import { describe, expect, it } from 'vitest';
import {
  BinaryValueError,
  TypeOid,
  binaryKind,
  binaryValueFromText,
  binaryValueText,
  holdsText,
} from '../../../../../src/broker/protocols/postgres/binary-values.js';

/** numeric_send's layout, built by hand: ndigits, weight, sign, dscale, base-10000 digits. */
function numeric(weight: number, sign: number, dscale: number, digits: number[]): Buffer {
  const b = Buffer.alloc(8 + 2 * digits.length);
  b.writeInt16BE(digits.length, 0);
  b.writeInt16BE(weight, 2);
  b.writeUInt16BE(sign, 4);
  b.writeUInt16BE(dscale, 6);
  digits.forEach((d, i) => b.writeInt16BE(d, 8 + 2 * i));
  return b;
}

describe('binary values', () => {
  it('reads integers, oids and int8 beyond 2^53 as the server prints them', () => {
    const int8 = Buffer.alloc(8);
    int8.writeBigInt64BE(9007199254740993n);
    expect(binaryValueText(TypeOid.int8, int8)).toBe('9007199254740993');
    expect(binaryValueText(TypeOid.int4, Buffer.from([0xff, 0xff, 0xff, 0xd6]))).toBe('-42');
    expect(binaryValueText(TypeOid.int2, Buffer.from([0x7f, 0xff]))).toBe('32767');
    expect(binaryValueText(TypeOid.oid, Buffer.from([0xff, 0xff, 0xff, 0xff]))).toBe('4294967295');
  });

  it.each([
    ['1234.50', numeric(0, 0, 2, [1234, 5000])],
    ['-0.07', numeric(-1, 0x4000, 2, [700])],
    ['0.00001', numeric(-2, 0, 5, [1000])],
    ['12000000', numeric(1, 0, 0, [1200])],
    ['4111111111111111', numeric(3, 0, 0, [4111, 1111, 1111, 1111])],
    ['0', numeric(0, 0, 0, [])],
    ['0.000', numeric(0, 0, 3, [])],
    ['NaN', numeric(0, 0xc000, 0, [])],
    ['-Infinity', numeric(0, 0xf000, 0, [])],
  ])('reads numeric %s', (text, bytes) => {
    expect(binaryValueText(TypeOid.numeric, bytes)).toBe(text);
  });

  it('reads uuid as its canonical text', () => {
    const bytes = Buffer.from('6f1c2a4e9b3d4c1a8e2f0a1b2c3d4e5f', 'hex');
    expect(binaryValueText(TypeOid.uuid, bytes)).toBe('6f1c2a4e-9b3d-4c1a-8e2f-0a1b2c3d4e5f');
  });

  it('reads and writes text-like values, jsonb with its version byte, and bytea', () => {
    for (const oid of [TypeOid.text, TypeOid.varchar, TypeOid.bpchar, TypeOid.name, TypeOid.json, TypeOid.xml]) {
      expect(binaryValueText(oid, Buffer.from('zoë@example.com'))).toBe('zoë@example.com');
      expect(binaryValueFromText(oid, '[REDACTED]')).toEqual(Buffer.from('[REDACTED]'));
    }
    expect(binaryValueText(TypeOid.jsonb, Buffer.from('\x01{"a":1}'))).toBe('{"a":1}');
    expect(binaryValueFromText(TypeOid.jsonb, '{"a":"[REDACTED]"}')).toEqual(Buffer.from('\x01{"a":"[REDACTED]"}'));
    expect(binaryValueText(TypeOid.bytea, Buffer.from([0xde, 0xad]))).toBe('\\xdead');
  });

  it('cannot write masked text into numbers, uuid or types it does not know', () => {
    for (const oid of [TypeOid.int4, TypeOid.int8, TypeOid.numeric, TypeOid.uuid, TypeOid.bool, 99999]) {
      expect(holdsText(oid)).toBe(false);
      expect(binaryValueFromText(oid, '[REDACTED]')).toBeUndefined();
    }
    expect(binaryKind(TypeOid.float8)).toBe('opaque');
    expect(binaryKind(1009 /* text[] */)).toBe('unknown');
  });

  it.each([
    ['an int4 of 3 bytes', TypeOid.int4, Buffer.alloc(3)],
    ['a uuid of 15 bytes', TypeOid.uuid, Buffer.alloc(15)],
    ['jsonb of another version', TypeOid.jsonb, Buffer.from('\x02{}')],
    ['text that is not UTF-8', TypeOid.text, Buffer.from([0xc3, 0x28])],
    ['numeric shorter than its digit count', TypeOid.numeric, numeric(0, 0, 0, [1, 2]).subarray(0, 10)],
    ['numeric with a digit over 9999', TypeOid.numeric, numeric(0, 0, 0, [10000])],
    ['numeric with an unknown sign', TypeOid.numeric, numeric(0, 0x1234, 0, [1])],
    ['a type it cannot read', 1009, Buffer.alloc(4)],
  ])('refuses to read %s', (_what, oid, bytes) => {
    expect(() => binaryValueText(oid, bytes)).toThrow(BinaryValueError);
  });

  it('refuses a fixed-layout value cut at any byte rather than read part of it', () => {
    const int8 = Buffer.alloc(8);
    int8.writeBigInt64BE(4111111111111111n);
    const values: Array<[number, Buffer]> = [
      [TypeOid.int8, int8],
      [TypeOid.int4, Buffer.from([0, 0, 0, 42])],
      [TypeOid.uuid, Buffer.from('6f1c2a4e9b3d4c1a8e2f0a1b2c3d4e5f', 'hex')],
      [TypeOid.numeric, numeric(3, 0, 2, [4111, 1111, 1111, 1111, 5000])],
    ];
    for (const [oid, bytes] of values) {
      for (let cut = 0; cut < bytes.length; cut++) {
        expect(() => binaryValueText(oid, bytes.subarray(0, cut)), `type ${oid} cut at ${cut}`).toThrow(BinaryValueError);
      }
      expect(() => binaryValueText(oid, Buffer.concat([bytes, Buffer.of(0)])), `type ${oid} with a byte more`).toThrow(BinaryValueError);
    }
  });
});
