import { describe, expect, it } from 'vitest';
import { md5PasswordResponse, scramClientFinal, scramClientFirst, ScramError, verifyScramServerFinal } from '../../../../../src/broker/protocols/postgres/scram.js';

// RFC 7677 section 3: user "user", password "pencil".
const clientNonce = 'rOprNGfwEbeRWgbNEkqO';
const serverFirst = 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096';
const expectedClientFinal = 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
const serverFinal = 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=';

describe('SCRAM-SHA-256 client', () => {
  it('produces the RFC 7677 client messages', () => {
    const first = scramClientFirst({ username: 'user', clientNonce });
    expect(first.message).toBe('n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    const final = scramClientFinal(first, serverFirst, 'pencil');
    expect(final.message).toBe(expectedClientFinal);
    expect(() => verifyScramServerFinal(serverFinal, final.expectedServerSignature)).not.toThrow();
  });

  it('refuses a server signature that does not prove the password', () => {
    const first = scramClientFirst({ username: 'user', clientNonce });
    const final = scramClientFinal(first, serverFirst, 'pencil');
    const forged = 'v=' + Buffer.alloc(32, 7).toString('base64');
    expect(() => verifyScramServerFinal(forged, final.expectedServerSignature)).toThrow(ScramError);
    expect(() => verifyScramServerFinal('e=invalid-proof', final.expectedServerSignature)).toThrow(/invalid-proof/);
  });

  it('refuses a server nonce that does not extend the client nonce', () => {
    const first = scramClientFirst({ clientNonce });
    expect(() => scramClientFinal(first, 'r=somethingElse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096', 'pencil')).toThrow(/nonce/);
  });

  it('proves the current password after a rotation, with the same salt as before (regression: the salted key is cached)', () => {
    const login = (password: string) => scramClientFinal(scramClientFirst({ username: 'user', clientNonce }), serverFirst, password).message;
    expect(login('pencil')).toBe(expectedClientFinal);
    expect(login('rotated')).not.toBe(expectedClientFinal);
    expect(login('pencil')).toBe(expectedClientFinal);
  });

  it('keeps proving the password when backends send many different salts', () => {
    for (let i = 0; i < 100; i++) {
      const salt = Buffer.alloc(16, i).toString('base64');
      scramClientFinal(scramClientFirst({ clientNonce }), `r=${clientNonce}x,s=${salt},i=16`, 'pencil');
    }
    const final = scramClientFinal(scramClientFirst({ username: 'user', clientNonce }), serverFirst, 'pencil');
    expect(final.message).toBe(expectedClientFinal);
    expect(() => verifyScramServerFinal(serverFinal, final.expectedServerSignature)).not.toThrow();
  });

  it('uses a fresh random nonce each time', () => {
    expect(scramClientFirst().clientNonce).not.toBe(scramClientFirst().clientNonce);
  });
});

describe('md5 password', () => {
  it('matches PostgreSQL: "md5" + md5hex(md5hex(password + user) + salt)', () => {
    // Expected value computed independently with Python's hashlib for user alice, password secret.
    expect(md5PasswordResponse('alice', 'secret', Buffer.from([1, 2, 3, 4]))).toBe('md598a0412b9c31436fc53776e863350083');
  });
});
