import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { type BusAuth, connectBus, credsFileAuth } from '../bus/connection.ts';
import { BUS_DIR } from '../control-plane/bus-authority.ts';
import { rootLogger } from '../lib/logger.ts';
import { readManifest, type Manifest } from '../sim/manifest.ts';
import { CONTROL_PLANE_URL } from '../sim/layout.ts';
import { inboxPrefixFor } from '../contract/bus-auth.ts';
import { CliError, str, type Values } from './args.ts';

/**
 * The bus options of the commands that read the event streams (`events`, `replay`): `--nats-url` and
 * `--nats-creds` (or `--nats-token` in token mode) for a deployment, or `--sim [DIR]`, which runs the same command again inside a
 * running sim's network namespace where its NATS is reachable.
 */

/** The sim directory of `--sim [DIR]`, or null without it. */
export function simDir(v: Values): string | null {
  return v.sim === undefined ? null : (str(v.sim) ?? '.state/sim');
}

/** argv without `--sim` and its optional directory. */
export function withoutSim(argv: string[]): { dir: string | null; rest: string[] } {
  const i = argv.findIndex((a) => a === '--sim' || a.startsWith('--sim='));
  if (i < 0) return { dir: null, rest: argv };
  if (argv[i]!.startsWith('--sim=')) return { dir: argv[i]!.slice(6), rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
  const next = argv[i + 1];
  if (next !== undefined && !next.startsWith('-')) return { dir: next, rest: [...argv.slice(0, i), ...argv.slice(i + 2)] };
  return { dir: '.state/sim', rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
}

/** The manifest of the sim in `dir`, or a clear error. */
export function simManifest(dir: string): Manifest {
  const m = readManifest(resolve(dir));
  if (!m) throw new CliError(`no sim in ${resolve(dir)} (no manifest.json): start one with 'relay-core sim up'`, 1);
  return m;
}

/**
 * `--sim`: run `relay-core <command> argv...` inside the sim's inet namespace, pointed at its NATS (every
 * node of a cluster) with the operator's reader credentials; with `to: 'control-plane'`, at its control
 * plane with its service-role key instead (the operator's commands that call the functions).
 */
export async function reexecInSim(dir: string, command: string, argv: string[], to: 'bus' | 'control-plane' = 'bus'): Promise<number> {
  const m = simManifest(dir);
  const ns = `rcs-${m.simId}-inet`;
  const script = process.argv[1]!;
  // The sim's NATS admits the control plane's users only: the operator's reader credentials.
  const target =
    to === 'bus'
      ? ['--nats-url', m.controlPlane.natsUrl, '--nats-creds', join(m.controlPlane.stateDir, BUS_DIR, 'reader.creds')]
      : ['--control-plane-url', CONTROL_PLANE_URL, '--token-file', m.controlPlane.serviceRoleKeyFile];
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, script, command, ...argv, ...target], {
    stdio: 'inherit',
  });
  // Ctrl-C reaches the child through the terminal's process group too; a signal sent to us alone is passed on.
  const pass = () => child.kill('SIGTERM');
  process.on('SIGTERM', pass);
  process.on('SIGINT', pass);
  return await new Promise<number>((r) => child.on('exit', (code, signal) => r(code ?? (signal ? 1 : 0))));
}

/** `--nats-creds FILE` (a user JWT), else `--nats-token` (token mode), else none (a bus without auth refuses nothing; one with auth refuses us, saying so). */
export function busAuthOf(v: Values, inboxPrefix?: string): BusAuth {
  const creds = str(v.natsCreds);
  if (creds) {
    try {
      return credsFileAuth(creds, inboxPrefix);
    } catch (e) {
      throw new CliError(`cannot read --nats-creds ${creds}: ${(e as Error).message}`, 2);
    }
  }
  const token = str(v.natsToken);
  return token ? { kind: 'token', token } : { kind: 'none' };
}

/** Connect to the NATS of `--nats-url` (or RELAYNET_NATS_SERVERS) to read streams. */
export async function connectForReading(v: Values, name: string): Promise<NatsConnection> {
  const url = str(v.natsUrl);
  if (!url) throw new CliError('give --nats-url URL (or RELAYNET_NATS_SERVERS), or --sim for a running sim', 2);
  const servers = url.split(',');
  try {
    return await connectBus({
      servers,
      auth: busAuthOf(v, inboxPrefixFor({ kind: 'reader' })),
      name,
      logger: rootLogger({ component: name }, process.env.RELAYNET_LOG_LEVEL ?? 'warn'),
      waitOnFirstConnect: false,
    });
  } catch (e) {
    throw new CliError(`cannot reach NATS at ${servers.join(',')}: ${authHint((e as Error).message)}`, 1);
  }
}

/** A refusal by nats-server, explained. */
export function authHint(message: string): string {
  return /authorization|authentication/i.test(message)
    ? `${message} (this NATS admits users with credentials: give --nats-creds FILE, e.g. the control plane's STATE_DIR/bus/reader.creds or admin.creds)`
    : message;
}
