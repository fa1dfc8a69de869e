import { describe, expect, it } from 'vitest';
import { closestNames, didYouMean, editDistance } from '../../../src/lib/did-you-mean.js';
import { takeProfileOption } from '../../../src/cli.js';

describe('did you mean', () => {
  it('offers the nearest names for typos, swaps and prefixes, and nothing for a different word', () => {
    expect(closestNames('defualtAction', ['name', 'defaultAction', 'description'])).toEqual(['defaultAction']);
    expect(closestNames('app-gp', ['app-pg', 'jit-pg', 'web-1'])).toEqual(['app-pg']);
    expect(closestNames('conn', ['connect', 'connections', 'exec'])).toEqual(['connect', 'connections']);
    expect(didYouMean('orders', ['app-pg', 'jit-pg'])).toBe('');
    expect(didYouMean('verify-fulll', ['verify-ca', 'verify-full'])).toBe(' (did you mean "verify-full"?)');
    expect(editDistance('ab', 'ba')).toBe(1);
  });
});

describe('--profile on the command line', () => {
  it('is taken before or after the command, never after --', () => {
    expect(takeProfileOption(['node', 'hoopctl', '--profile', 'prod', 'sessions'])).toEqual({ name: 'prod', argv: ['node', 'hoopctl', 'sessions'] });
    expect(takeProfileOption(['node', 'hoopctl', 'exec', 'web', '--profile=prod', '--', 'tool', '--profile', 'x'])).toEqual({
      name: 'prod',
      argv: ['node', 'hoopctl', 'exec', 'web', '--', 'tool', '--profile', 'x'],
    });
    expect(() => takeProfileOption(['node', 'hoopctl', 'sessions', '--profile'])).toThrow('--profile needs a name');
  });
});
