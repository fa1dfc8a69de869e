#!/usr/bin/env node
// Makes sure what the tests drive for real is on this machine: PostgreSQL server binaries, psql and pgbench,
// pgjdbc with a JDK and psycopg 3.
// As root it installs missing Debian packages; otherwise it prints the exact command and fails.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const pgServer = () =>
  (process.env.PG_BIN_DIR && existsSync(`${process.env.PG_BIN_DIR}/initdb`)) ||
  (existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`)));

const missing = [];
if (!pgServer()) missing.push('postgresql');
if (!have('psql') || !have('pgbench')) missing.push('postgresql-client');
if (!have('runuser')) missing.push('util-linux');
if (!have('openssl')) missing.push('openssl');
// The approver console and shell completion (a real bash) are driven in a real terminal.
if (!have('tmux')) missing.push('tmux');
// The keychain tests run a real Secret Service in a private D-Bus session.
if (!have('dbus-run-session')) missing.push('dbus-daemon');
if (!have('gnome-keyring-daemon')) missing.push('gnome-keyring');
// SSH connections are tested against a real OpenSSH sshd with the real ssh, scp and sftp clients.
if (!existsSync('/usr/sbin/sshd')) missing.push('openssh-server');
if (!have('ssh') || !have('scp') || !have('sftp') || !have('ssh-keygen')) missing.push('openssh-client');

// Binary results are driven with the drivers that ask for them: pgjdbc (on a JDK) and psycopg 3 (system Python).
if (!existsSync('/usr/share/java/postgresql.jar')) missing.push('libpostgresql-jdbc-java');
if (!have('javac')) missing.push('default-jdk-headless');
if (spawnSync('/usr/bin/python3', ['-c', 'import psycopg'], { stdio: 'ignore' }).status !== 0) missing.push('python3-psycopg');

// tcp connections are tested against a real Redis with redis-cli.
if (!have('redis-server') || !have('redis-cli')) missing.push('redis-server');
// HTTP connections are driven with curl.
if (!have('curl')) missing.push('curl');
// Several broker replicas are tested behind a real HAProxy (deploy/haproxy.cfg is the configuration it runs).
if (!have('haproxy')) missing.push('haproxy');

// Kubernetes connections are driven with a real kubectl; it must speak WebSocket exec (1.30 or later), which
// Debian's own kubernetes-client (1.20) does not, so it is not installed from here.
const kubectl = spawnSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8' });
const minor = kubectl.status === 0 ? Number(JSON.parse(kubectl.stdout).clientVersion?.minor?.replace(/\D/g, '')) : 0;
if (!(minor >= 30)) {
  console.error('The Kubernetes tests need kubectl 1.30 or later on PATH (WebSocket exec). Install it from\n' +
    '  https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ (e.g. the pkgs.k8s.io apt repository)\n' +
    "Debian's kubernetes-client package (1.20) is too old.");
  process.exit(1);
}

if (missing.length === 0) process.exit(0);
const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  console.error(`The tests need Debian packages that are missing: ${missing.join(' ')}\nInstall them with:\n  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`);
  process.exit(1);
}
console.error(`installing ${missing.join(' ')} for the tests…`);
execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
