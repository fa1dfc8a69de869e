/**
 * JSON as text, read and written without loss: numbers keep the digits they were written with (a 16-digit card
 * number must survive unrounded), so masking can rewrite some values and leave every other byte's meaning intact.
 */
export type JsonValue =
  | { t: 'string'; v: string }
  | { t: 'number'; raw: string }
  | { t: 'literal'; raw: 'true' | 'false' | 'null' }
  | { t: 'array'; items: JsonValue[] }
  | { t: 'object'; members: Array<[string, JsonValue]> };

const MAX_JSON_DEPTH = 256;

export class JsonTooDeep extends Error {}

/** A small JSON reader that keeps numbers as written (a 19-digit card number must not be rounded). */
export function parseJson(text: string): JsonValue {
  let pos = 0;
  const ws = () => {
    while (pos < text.length && (text[pos] === ' ' || text[pos] === '\n' || text[pos] === '\r' || text[pos] === '\t')) pos++;
  };
  const fail = (): never => {
    throw new SyntaxError(`invalid JSON at ${pos}`);
  };
  const readString = (): string => {
    const start = pos;
    pos++;
    while (pos < text.length && text[pos] !== '"') pos += text[pos] === '\\' ? 2 : 1;
    if (pos >= text.length) fail();
    pos++;
    return JSON.parse(text.slice(start, pos)) as string;
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_JSON_DEPTH) throw new JsonTooDeep();
    ws();
    const c = text[pos];
    if (c === '"') return { t: 'string', v: readString() };
    if (c === '{') {
      pos++;
      const members: Array<[string, JsonValue]> = [];
      ws();
      if (text[pos] === '}') {
        pos++;
        return { t: 'object', members };
      }
      for (;;) {
        ws();
        if (text[pos] !== '"') fail();
        const k = readString();
        ws();
        if (text[pos++] !== ':') fail();
        members.push([k, value(depth + 1)]);
        ws();
        if (text[pos] === ',') pos++;
        else if (text[pos] === '}') {
          pos++;
          return { t: 'object', members };
        } else fail();
      }
    }
    if (c === '[') {
      pos++;
      const items: JsonValue[] = [];
      ws();
      if (text[pos] === ']') {
        pos++;
        return { t: 'array', items };
      }
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[pos] === ',') pos++;
        else if (text[pos] === ']') {
          pos++;
          return { t: 'array', items };
        } else fail();
      }
    }
    for (const lit of ['true', 'false', 'null'] as const) {
      if (text.startsWith(lit, pos)) {
        pos += lit.length;
        return { t: 'literal', raw: lit };
      }
    }
    const start = pos;
    if (text[pos] === '-') pos++;
    while (pos < text.length && '0123456789.eE+-'.includes(text[pos])) pos++;
    const raw = text.slice(start, pos);
    if (raw.length === 0 || Number.isNaN(Number(raw))) fail();
    return { t: 'number', raw };
  };
  const v = value(0);
  ws();
  if (pos !== text.length) fail();
  return v;
}

export function serialize(v: JsonValue): string {
  switch (v.t) {
    case 'string':
      return JSON.stringify(v.v);
    case 'number':
    case 'literal':
      return v.raw;
    case 'array':
      return `[${v.items.map(serialize).join(',')}]`;
    case 'object':
      return `{${v.members.map(([k, m]) => `${JSON.stringify(k)}:${serialize(m)}`).join(',')}}`;
  }
}
