import type { Command } from 'commander';
import { register as broker } from './broker.js';
import { register as login } from './login.js';
import { register as connect } from './connect.js';
import { register as exec } from './exec.js';
import { register as sessions } from './sessions.js';
import { register as demo } from './demo.js';
import { register as policy } from './policy.js';
import { register as reviews } from './reviews.js';
import { register as locks } from './locks.js';
import { register as connections } from './connections.js';
import { register as status } from './status.js';
import { register as profiles } from './profiles.js';
import { register as completion } from './completion.js';
import { register as launch } from './launch.js';
import { register as mcp } from './mcp.js';

/** Each command file exports `register(program)`; this is the only list of them. */
export function registerCommands(program: Command): void {
  for (const register of [login, status, profiles, connections, connect, launch, exec, mcp, reviews, sessions, locks, policy, broker, demo, completion]) register(program);
}
