/**
 * Result values in PostgreSQL's binary format, as far as masking needs them: which types carry text, how to read
 * a value as the text the server would have sent in text format (so detectors and the hash strategy see the same
 * string either way), and how to write masked text back in the type's binary form.
 * @see https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-FORMAT-CODES
 * (the binary forms are each type's `*_send` function in the PostgreSQL sources)
 */

/** Type OIDs of the built-in types named here (pg_type.dat; fixed across versions). */
export const TypeOid = {
  bool: 16,
  bytea: 17,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  json: 114,
  xml: 142,
  float4: 700,
  float8: 701,
  unknown: 705,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  interval: 1186,
  timetz: 1266,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
} as const;

/**
 * How a binary value relates to masking:
 * - `text`: the bytes are the text itself (text, varchar, bpchar, name, xml, json, unknown) — read and written;
 * - `jsonb`: a version byte (1) and the JSON text — read and written;
 * - `bytes`: bytea — any bytes are a valid value, so masked text can be written; its text form is hex, in which
 *   the detectors find nothing, so no detector applies to it in text format either;
 * - `digits`: integers and numeric — readable as the decimal text, not writable as masked text;
 * - `uuid`: readable as its canonical text, not writable as masked text;
 * - `opaque`: booleans, floats, dates and times, arrays of those — nothing a detector looks for can be in them;
 * - `unknown`: everything else (arrays of text, extension types such as citext, composites) — not readable.
 */
export type BinaryKind = 'text' | 'jsonb' | 'bytes' | 'digits' | 'uuid' | 'opaque' | 'unknown';

const KINDS = new Map<number, BinaryKind>([
  [TypeOid.text, 'text'],
  [TypeOid.varchar, 'text'],
  [TypeOid.bpchar, 'text'],
  [TypeOid.name, 'text'],
  [TypeOid.xml, 'text'],
  [TypeOid.json, 'text'],
  [TypeOid.unknown, 'text'],
  [TypeOid.jsonb, 'jsonb'],
  [TypeOid.bytea, 'bytes'],
  [TypeOid.int2, 'digits'],
  [TypeOid.int4, 'digits'],
  [TypeOid.int8, 'digits'],
  [TypeOid.oid, 'digits'],
  [TypeOid.numeric, 'digits'],
  [TypeOid.uuid, 'uuid'],
  [TypeOid.bool, 'opaque'],
  [TypeOid.float4, 'opaque'],
  [TypeOid.float8, 'opaque'],
  [TypeOid.date, 'opaque'],
  [TypeOid.time, 'opaque'],
  [TypeOid.timetz, 'opaque'],
  [TypeOid.timestamp, 'opaque'],
  [TypeOid.timestamptz, 'opaque'],
  [TypeOid.interval, 'opaque'],
  // Arrays of the opaque types: bool[], float4[], float8[], date[], timestamp[], timestamptz[], time[], interval[].
  ...[1000, 1021, 1022, 1182, 1115, 1185, 1183, 1187].map((oid): [number, BinaryKind] => [oid, 'opaque']),
]);

export function binaryKind(typeOid: number): BinaryKind {
  return KINDS.get(typeOid) ?? 'unknown';
}

/** A binary value that does not have the layout its type requires. */
export class BinaryValueError extends Error {
  override name = 'BinaryValueError';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The text the server sends for this value in text format (for bytea, the default `hex` output). Throws
 * BinaryValueError for a value its type cannot have, and for a kind that cannot be read.
 */
export function binaryValueText(typeOid: number, value: Buffer): string {
  switch (binaryKind(typeOid)) {
    case 'text':
      return decodeUtf8(value);
    case 'jsonb':
      if (value.length < 1 || value[0] !== 1) throw new BinaryValueError(`jsonb value of version ${value[0] ?? 'none'}`);
      return decodeUtf8(value.subarray(1));
    case 'bytes':
      return `\\x${value.toString('hex')}`;
    case 'uuid':
      return uuidText(value);
    case 'digits':
      return digitsText(typeOid, value);
    default:
      throw new BinaryValueError(`type ${typeOid} cannot be read in binary`);
  }
}

/** Masked text in the binary form of its type; undefined for types that cannot hold it (numbers, uuid …). */
export function binaryValueFromText(typeOid: number, text: string): Buffer | undefined {
  switch (binaryKind(typeOid)) {
    case 'text':
    case 'bytes':
      return Buffer.from(text, 'utf8');
    case 'jsonb':
      return Buffer.concat([Buffer.of(1), Buffer.from(text, 'utf8')]);
    default:
      return undefined;
  }
}

/** Whether masked text can be written back in this type's binary form. */
export function holdsText(typeOid: number): boolean {
  const kind = binaryKind(typeOid);
  return kind === 'text' || kind === 'jsonb' || kind === 'bytes';
}

function decodeUtf8(value: Buffer): string {
  try {
    return utf8.decode(value);
  } catch {
    // Invalid UTF-8 would be decoded with replacement characters, and masked text rebuilt from it would differ.
    throw new BinaryValueError('text value that is not valid UTF-8');
  }
}

function uuidText(value: Buffer): string {
  if (value.length !== 16) throw new BinaryValueError(`uuid of ${value.length} bytes`);
  const hex = value.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function digitsText(typeOid: number, value: Buffer): string {
  const expect = (n: number) => {
    if (value.length !== n) throw new BinaryValueError(`type ${typeOid} value of ${value.length} bytes`);
  };
  switch (typeOid) {
    case TypeOid.int2:
      expect(2);
      return String(value.readInt16BE(0));
    case TypeOid.int4:
      expect(4);
      return String(value.readInt32BE(0));
    case TypeOid.oid:
      expect(4);
      return String(value.readUInt32BE(0));
    case TypeOid.int8:
      expect(8);
      return value.readBigInt64BE(0).toString();
    default:
      return numericText(value);
  }
}

const NUMERIC_POS = 0x0000;
const NUMERIC_NEG = 0x4000;
const NUMERIC_SPECIAL: Record<number, string> = { 0xc000: 'NaN', 0xd000: 'Infinity', 0xf000: '-Infinity' };
const MAX_NUMERIC_DIGITS = 0x4000;

/**
 * numeric_send: int16 ndigits, int16 weight (of the first base-10000 digit), uint16 sign, uint16 dscale
 * (digits after the point), then ndigits base-10000 digits. Printed as numeric_out prints it.
 */
export function numericText(value: Buffer): string {
  if (value.length < 8) throw new BinaryValueError('numeric value shorter than its header');
  const ndigits = value.readInt16BE(0);
  const weight = value.readInt16BE(2);
  const sign = value.readUInt16BE(4);
  const dscale = value.readUInt16BE(6);
  if (ndigits < 0 || ndigits > MAX_NUMERIC_DIGITS || value.length !== 8 + 2 * ndigits || dscale > MAX_NUMERIC_DIGITS) {
    throw new BinaryValueError('numeric value whose length does not match its digit count');
  }
  if (NUMERIC_SPECIAL[sign] !== undefined) return NUMERIC_SPECIAL[sign];
  if (sign !== NUMERIC_POS && sign !== NUMERIC_NEG) throw new BinaryValueError(`numeric value with sign ${sign}`);
  const digits: number[] = [];
  for (let i = 0; i < ndigits; i++) {
    const d = value.readInt16BE(8 + 2 * i);
    if (d < 0 || d > 9999) throw new BinaryValueError(`numeric digit ${d}`);
    digits.push(d);
  }
  const at = (i: number) => (i >= 0 && i < digits.length ? digits[i] : 0);
  // Integer part: base-10000 digits 0..weight; the first without leading zeros.
  let int = '';
  for (let i = 0; i <= weight; i++) int += i === 0 ? String(at(i)) : String(at(i)).padStart(4, '0');
  if (int === '') int = '0';
  let frac = '';
  for (let i = weight + 1; frac.length < dscale; i++) frac += String(at(i)).padStart(4, '0');
  frac = frac.slice(0, dscale);
  const text = dscale > 0 ? `${int}.${frac}` : int;
  return sign === NUMERIC_NEG ? `-${text}` : text;
}
