import type { Command } from 'commander';
import { loadBrokerConfig } from '../broker/config.js';
import { startBroker } from '../broker/broker.js';
import { prepareBroker } from '../broker/broker-resources.js';
import { probeStore } from '../broker/store/open-store.js';
import { UserError } from '../lib/errors.js';
import { installMemoryReport } from '../lib/memory-report.js';
import { printJson } from './render.js';
import { waitForSignal } from '../lib/signals.js';

export function register(program: Command): void {
  const broker = program.command('broker').description('Run the broker service');
  broker
    .command('start')
    .description('Start the broker: HTTP API and tunnel endpoint on one port')
    .requiredOption('-c, --config <file>', 'broker configuration (YAML)')
    .addHelpText('after', '\nExample:\n  hoopctl broker start --config broker.yaml\n  kill -HUP <pid>     # re-read the connections (rules, access, masks); running sessions keep theirs')
    .action(async (opts: { config: string }) => {
      // Everything the config names is opened first: a problem is a user error before any store or key is created.
      const { config, resources } = prepareBroker(opts.config);
      const running = await startBroker(config, { resources }).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
          throw new UserError(`cannot listen on ${config.server.listen}: ${e.code}`, { code: 'LISTEN_FAILED', hint: 'change server.listen in the config, or stop what holds the port' });
        }
        throw e;
      });
      process.stderr.write(`broker listening on ${running.url}\n`);
      installMemoryReport();
      // SIGHUP re-reads the config: new sessions follow its connections; a bad file changes nothing.
      const onHup = () => {
        try {
          const r = running.reload(loadBrokerConfig(opts.config));
          process.stderr.write(
            `config reloaded: ${r.connections} connection(s)${r.needRestart.length ? `; ${r.needRestart.join(', ')} changed and take effect after a restart` : ''}\n`,
          );
        } catch (e) {
          process.stderr.write(`config not reloaded, the running one stays: ${(e as Error).message}\n`);
        }
      };
      process.on('SIGHUP', onHup);
      // SIGTERM (an orchestrator, a rolling restart) drains first; SIGINT (Ctrl-C) stops now.
      if ((await waitForSignal()) === 'SIGTERM') await running.drain();
      process.off('SIGHUP', onHup);
      await running.close();
    });
  broker
    .command('rotate <connection>')
    .description('Rotate a connection\'s backend credential now (admin groups): a new PostgreSQL password or SSH key, set on the backend and written to its secret file by the running broker')
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--broker <url>', 'broker URL')
    .addHelpText('after', '\nExamples:\n  hoopctl broker rotate pg-prod\n  hoopctl audit events --type credential.rotated   # when each was last rotated')
    .action(async (name: string, opts: { output: string; broker?: string }) => {
      // The client side (profiles, the token store, the OIDC client) is loaded here, not with `broker start`: ~8 MB
      // of resident memory a running broker never uses.
      const { brokerPost, parseOutput, resolveBroker } = await import('./context.js');
      const format = parseOutput(opts.output);
      const { rotation } = await brokerPost<{ rotation: Record<string, unknown> }>(resolveBroker(opts.broker), `/api/v1/connections/${encodeURIComponent(name)}/rotate`, {});
      if (format === 'json') return printJson(rotation);
      const what = rotation.type === 'ssh' ? `new key ${String(rotation.fingerprint)}` : `new password for ${String(rotation.user)}`;
      process.stdout.write(`${name}: credential rotated (${what}, written to ${String(rotation.file)})\n`);
    });
  broker
    .command('check')
    .description('Validate a broker configuration file and everything it names (TLS files, secrets, keys, CA files, the store directory), then exit')
    .requiredOption('-c, --config <file>', 'broker configuration (YAML)')
    .action(async (opts: { config: string }) => {
      // The same loading and opening `broker start` does first, so check passes only what start can open.
      const { config, resources } = prepareBroker(opts.config);
      const store = await probeStore(config.store);
      const parts = [
        `${config.connections.length} connection(s) (${config.connections.map((c) => `${c.name}: ${c.type}`).join(', ') || 'none'})`,
        `${config.auth.issuers.length} issuer(s)`,
        ...(store ? [store] : []),
        config.export.length ? `export to ${config.export.map((e) => `${e.name} (${e.type})`).join(', ')}` : 'no export',
        config.notify.length ? `review notifications to ${config.notify.map((n) => n.name).join(', ')}` : 'no review notifications',
        config.metrics ? `metrics on ${config.metrics.listen}` : 'no metrics listener',
        config.postgres ? `PostgreSQL front door on ${config.postgres.listen}${resources.tls ? ' (TLS)' : ' (plain, loopback)'}` : 'no PostgreSQL front door',
        `audit signing key ${config.audit.signingKey ? 'configured' : 'kept next to the store'}`,
        ...(resources.tls ? ['TLS certificate and key read'] : []),
        `admins: ${config.admin.groups.join(', ') || 'none'}`,
      ];
      process.stdout.write(`config ok: ${parts.join('; ')}\n`);
    });
}

