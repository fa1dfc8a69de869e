import { describe, expect, it } from 'vitest';
import { Reader } from '../../../../../src/broker/protocols/postgres/buffer-reader.js';
import { Writer } from '../../../../../src/lib/pg-wire/buffer-writer.js';
import { PgWireError } from '../../../../../src/broker/protocols/postgres/errors.js';
import {
  createBind,
  createCancelRequest,
  createErrorResponse,
  createParse,
  createQuery,
  createStartupMessage,
  describeParam,
  parseBind,
  parseCancelRequest,
  parseErrorResponse,
  parseParse,
  parseQuery,
  parseStartupMessage,
  rowsFromTag,
} from '../../../../../src/broker/protocols/postgres/messages.js';

const body = (frame: Buffer) => frame.subarray(5);

describe('Writer and Reader', () => {
  it('round-trip every field type and back-fill the frame length', () => {
    const frame = new Writer(8).addByte(7).addInt16(-2).addInt32(123456789).addCString('héllo').addString('xy').addBytes(Buffer.from([1, 2])).frame('Q');
    expect(String.fromCharCode(frame[0])).toBe('Q');
    expect(frame.readInt32BE(1)).toBe(frame.length - 1);
    const r = new Reader(body(frame));
    expect(r.byte()).toBe(7);
    expect(r.int16()).toBe(-2);
    expect(r.int32()).toBe(123456789);
    expect(r.cstring()).toBe('héllo');
    expect(r.string(2)).toBe('xy');
    expect([...r.bytes(2)]).toEqual([1, 2]);
    expect(r.remaining).toBe(0);
  });

  it('grows past its initial size and can be reused after frame()', () => {
    const w = new Writer(8);
    const big = w.addCString('a'.repeat(10_000)).frame('Q');
    expect(parseQuery(body(big))).toBe('a'.repeat(10_000));
    const small = w.addCString('b').frame('Q');
    expect(small.length).toBe(7);
    expect(parseQuery(body(small))).toBe('b');
  });

  it('writes untyped startup-phase messages with the length first', () => {
    const msg = createStartupMessage({ user: 'u', database: 'd' });
    expect(msg.readInt32BE(0)).toBe(msg.length);
    expect(parseStartupMessage(msg.subarray(4))).toEqual({ major: 3, minor: 0, parameters: { user: 'u', database: 'd' } });
  });

  it('reports a Query without its NUL terminator as a protocol violation', () => {
    const truncated = new Writer().addString('select 1').frame('Q');
    expect(() => parseQuery(body(truncated))).toThrow(PgWireError);
    expect(() => parseQuery(body(truncated))).toThrow(/protocol violation: string without terminator/);
  });

  it('reports reading past the end as a protocol violation with SQLSTATE 08P01', () => {
    try {
      new Reader(Buffer.from([0, 1])).int32();
      expect.unreachable();
    } catch (e) {
      expect((e as PgWireError).sqlState).toBe('08P01');
    }
  });
});

describe('messages', () => {
  it('round-trip Parse and Bind, with text, binary and NULL parameters', () => {
    expect(parseParse(body(createParse({ name: 's1', sql: 'select $1', paramTypes: [23] })))).toEqual({ name: 's1', sql: 'select $1', paramTypes: [23] });
    const bind = parseBind(body(createBind({ portal: 'p', statement: 's1', params: ['42', Buffer.from([0xde, 0xad]), null], binary: [false, true, false] })));
    expect(bind.portal).toBe('p');
    expect(bind.statement).toBe('s1');
    expect(bind.params.map((p, i) => describeParam(p, bind.paramFormats[i]))).toEqual(['42', '\\xdead', null]);
  });

  it('applies a single Bind format code to every parameter', () => {
    const w = new Writer().addCString('').addCString('').addInt16(1).addInt16(1).addInt16(2);
    w.addInt32(1).addBytes(Buffer.from([1])).addInt32(1).addBytes(Buffer.from([2])).addInt16(0);
    const bind = parseBind(body(w.frame('B')));
    expect(bind.paramFormats).toEqual([1, 1]);
  });

  it('round-trip CancelRequest and ErrorResponse', () => {
    const cancel = createCancelRequest({ pid: 1234, secret: -99 });
    expect(cancel.length).toBe(16);
    expect(parseCancelRequest(cancel.subarray(4))).toEqual({ pid: 1234, secret: -99 });
    const err = parseErrorResponse(body(createErrorResponse({ severity: 'FATAL', code: '08P01', message: 'protocol violation: x' })));
    expect(err).toMatchObject({ severity: 'FATAL', code: '08P01', message: 'protocol violation: x' });
  });

  it('counts rows from command tags', () => {
    expect(rowsFromTag('SELECT 5')).toBe(5);
    expect(rowsFromTag('INSERT 0 3')).toBe(3);
    expect(rowsFromTag('UPDATE 2')).toBe(2);
    expect(rowsFromTag('COPY 10')).toBe(10);
    expect(rowsFromTag('CREATE TABLE')).toBe(0);
    expect(rowsFromTag('BEGIN')).toBe(0);
  });

  it('PgWireError turns into an ErrorResponse a client can read', () => {
    const wire = new PgWireError('ERROR', '42501', 'denied by rule no-ddl').toWire();
    expect(String.fromCharCode(wire[0])).toBe('E');
    expect(parseErrorResponse(body(wire))).toMatchObject({ severity: 'ERROR', code: '42501', message: 'denied by rule no-ddl' });
  });

  it('createQuery is readable by parseQuery', () => {
    expect(parseQuery(body(createQuery('select 1; select 2')))).toBe('select 1; select 2');
  });
});
