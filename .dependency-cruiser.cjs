/**
 * Import boundaries of hoopctl, checked by `npm test` (scripts/check-imports.mjs runs dependency-cruiser with this
 * file). The design's dependency direction: commands → tunnel, auth, commands/ui · broker → policy, protocols,
 * store, recording · protocols → policy · policy → nothing but its own types. See ../shared/DESIGN.md.
 */
/** Node built-ins that reach a file, a socket, a process or the clock of another machine: I/O. */
const IO_MODULES = [
  'fs', 'fs/promises', 'net', 'tls', 'http', 'https', 'http2', 'dgram', 'dns', 'dns/promises', 'child_process',
  'cluster', 'worker_threads', 'readline', 'repl', 'tty', 'os', 'process', 'inspector', 'v8', 'vm',
];
const io = `^(node:)?(${IO_MODULES.map((m) => m.replace('/', '\\/')).join('|')})$`;

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'An import cycle: modules that need each other cannot be understood, tested or moved one at a time.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'client-side-not-broker',
      severity: 'error',
      comment: 'The client side (Ink components, tunnels, login) never links broker code: wire types live in src/api.',
      from: { path: '^src/(commands/ui|tunnel|auth|api)/' },
      to: { path: '^src/broker/' },
    },
    {
      name: 'policy-is-pure',
      severity: 'error',
      comment: 'src/policy decides; it does no I/O and knows no broker, protocol, command or tunnel code.',
      from: { path: '^src/policy/' },
      to: { path: '^src/(broker|commands|tunnel|auth|dev)/' },
    },
    {
      name: 'policy-does-no-io',
      severity: 'error',
      comment: 'src/policy decides; files, sockets, processes and the OS are for the callers.',
      from: { path: '^src/policy/' },
      to: { dependencyTypes: ['core'], path: io },
    },
    {
      name: 'protocols-stay-below-the-broker',
      severity: 'error',
      comment:
        'A protocol module gets what it needs through its session context (src/broker/protocols/protocol.ts); it never ' +
        'reaches back into the broker above it (config, identity, store, reviews, sessions).',
      from: { path: '^src/broker/protocols/' },
      to: { path: '^src/broker/', pathNot: '^src/broker/(protocols/|recording/recorder\\.ts$)' },
    },
    {
      name: 'mcp-tools-are-front-door-neutral',
      severity: 'error',
      comment:
        'src/mcp shapes tool calls and outcomes for both MCP front doors (hoopctl mcp, the broker\'s /mcp): it reaches ' +
        'the gate only through the AgentGate it is given, never broker, tunnel, command or login code.',
      from: { path: '^src/mcp/' },
      to: { path: '^src/(broker|tunnel|commands|auth)/' },
    },
    {
      name: 'api-is-wire-types',
      severity: 'error',
      comment: 'src/api holds the shapes that cross the wire between the CLI and the broker, and the client for them.',
      from: { path: '^src/api/' },
      to: { path: '^src/(broker|commands|tunnel)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.tsx', '.js'] },
    moduleSystems: ['es6'],
  },
};
