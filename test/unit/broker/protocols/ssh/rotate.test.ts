import { describe, expect, it } from 'vitest';
import { addKeyBeside, authorizedKey, removeKey } from '../../../../../src/broker/protocols/ssh/rotate.js';

/** Editing authorized_keys during a key rotation: only the rotated key's lines change, options and others stay. */
const OLD = 'AAAAC3NzaC1lZDI1NTE5AAAAIHYG4236sYNGe/Y3SmMQtQoSmk3/EoxMYvTuwd6tZzEG';
const NEW = { type: 'ssh-ed25519', blob: 'AAAAC3NzaC1lZDI1NTE5AAAAIIUo6Jy6IBq8pRWCgHIDGUY0YBfslURAT/HznQMdeArR' };
const OTHER = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 someone@laptop';
const FILE = [`# keys`, `from="10.0.0.0/8",no-pty ssh-ed25519 ${OLD} hoopctl-broker`, OTHER, ''].join('\n');

describe('authorized_keys edits', () => {
  it('finds the key of a line with options, and none in a comment', () => {
    expect(authorizedKey(`from="10.0.0.0/8",no-pty ssh-ed25519 ${OLD} c`)).toEqual({ type: 'ssh-ed25519', blob: OLD });
    expect(authorizedKey('# keys')).toBeUndefined();
  });

  it('adds the new key beside the old one with the same options, then removes only the old one', () => {
    const both = addKeyBeside(FILE, OLD, NEW);
    expect(both.split('\n')).toEqual([
      '# keys',
      `from="10.0.0.0/8",no-pty ssh-ed25519 ${OLD} hoopctl-broker`,
      `from="10.0.0.0/8",no-pty ssh-ed25519 ${NEW.blob} hoopctl-broker`,
      OTHER,
      '',
    ]);
    expect(removeKey(both, OLD).split('\n')).toEqual(['# keys', `from="10.0.0.0/8",no-pty ssh-ed25519 ${NEW.blob} hoopctl-broker`, OTHER, '']);
  });
});
