import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { COMMAND_NAMES, registerCommands } from '../../../src/commands/index.js';

const names = (program: Command) => program.commands.map((c) => c.name());

describe('the command index', () => {
  it('lists every top-level command each file registers, in help order', async () => {
    const all = new Command('hoopctl');
    await registerCommands(all);
    expect(names(all)).toEqual(COMMAND_NAMES);
  });

  it('loads one command\'s file for that command: it registers the command asked for, and its siblings only', async () => {
    for (const name of COMMAND_NAMES) {
      const one = new Command('hoopctl');
      await registerCommands(one, name);
      expect(names(one)).toContain(name);
      expect(names(one).length).toBeLessThan(COMMAND_NAMES.length);
    }
  });

  it('registers every command for a name that is none of them, so commander can suggest the right one', async () => {
    const typo = new Command('hoopctl');
    await registerCommands(typo, 'sesions');
    expect(names(typo)).toEqual(COMMAND_NAMES);
  });
});
