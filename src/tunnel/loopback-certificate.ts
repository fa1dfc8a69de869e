import { createSecureContext, type SecureContext } from 'node:tls';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';

/**
 * A throwaway self-signed certificate for the local listener, so clients whose URL says `sslmode=require` can
 * connect. It only ever protects the loopback hop (the broker's own TLS to the database is configured on the
 * broker), and no client can verify it, so it is made fresh in memory at start-up and never written anywhere.
 *
 * Built by hand (a few DER structures, signed with node:crypto) rather than with the `openssl` command or a
 * certificate library: the command is missing from Windows and slim images and would put a key on disk, and a
 * library is a heavy dependency for one fixed certificate. ECDSA P-256 is what every TLS stack accepts.
 */
export interface LoopbackCertificate {
  /** PEM, for tests and for anyone who wants to look. */
  cert: string;
  key: string;
  secureContext: SecureContext;
}

export const LOOPBACK_CERTIFICATE_NAME = 'hoopctl local listener';

export function makeLoopbackCertificate(now: Date = new Date()): LoopbackCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(LOOPBACK_CERTIFICATE_NAME, 'utf8')))));
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and without a leading zero byte
  const day = 86_400_000;
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))), // version 3
    tlv(0x02, serial),
    ecdsaWithSha256,
    name,
    // A day back for clocks that disagree; a year ahead, more than any tunnel stays open.
    seq(utcTime(new Date(now.getTime() - day)), utcTime(new Date(now.getTime() + 365 * day))),
    name,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(
      0xa3,
      seq(
        // subjectAltName: IP 127.0.0.1 and DNS localhost, what a client on this machine dials.
        seq(oid('2.5.29.17'), tlv(0x04, seq(tlv(0x87, Buffer.from([127, 0, 0, 1])), tlv(0x82, Buffer.from('localhost'))))),
        // basicConstraints (critical): not a CA.
        seq(oid('2.5.29.19'), tlv(0x01, Buffer.from([0xff])), tlv(0x04, seq())),
      ),
    ),
  );
  const signature = sign('sha256', tbs, privateKey);
  const der = seq(tbs, ecdsaWithSha256, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const cert = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { cert, key, secureContext: createSecureContext({ cert, key }) };
}

function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  const n = body.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

function seq(...contents: Buffer[]): Buffer {
  return tlv(0x30, ...contents);
}

function set(...contents: Buffer[]): Buffer {
  return tlv(0x31, ...contents);
}

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const bytes = [a! * 40 + b!];
  for (const arc of rest) {
    const base128 = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) base128.unshift((v & 0x7f) | 0x80);
    bytes.push(...base128);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** UTCTime (YYMMDDHHMMSSZ), the form RFC 5280 wants for dates before 2050. */
function utcTime(d: Date): Buffer {
  const text = d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  return tlv(0x17, Buffer.from(text, 'latin1'));
}
