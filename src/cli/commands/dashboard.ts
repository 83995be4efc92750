import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { CliError, str, type Action } from '../args.ts';
import { connectForReading, reexecInSim, simDir, simManifest, withoutSim } from '../bus-options.ts';
import { simVerifyArgs, verificationOf } from '../verify-options.ts';
import { follow } from '../../bus/event-log-reader.ts';
import { startDashboard } from '../../dashboard/server.ts';
import { parseSince, type LogEntry, type Since, type Verification } from '../../events/log.ts';
import { rootLogger } from '../../lib/logger.ts';
import { parseListen, type ListenAddress } from '../../lib/metrics-server.ts';
import { formatReplay } from '../../replay/render.ts';
import { RelayReplay, type ReplayCut } from '../../replay/replay.ts';
import { verifyingDecoder } from './events.ts';
import { fromNats } from './replay.ts';

/** A relay message whose relay is not admitted yet (it publishes as it is admitted) is tried again this often, this many times. */
const UNKNOWN_KEY_RETRY_MS = 500;
const UNKNOWN_KEY_TRIES = 6;

/** `relay-core dashboard`: the operator's page, fed live from the streams, until Ctrl-C. */
export const dashboard: Action = async (v, ctx) => {
  let listen: ListenAddress;
  let since: Since;
  try {
    listen = parseListen(str(v.listen) ?? '127.0.0.1:8090');
    since = parseSince(str(v.since) ?? '1h', new Date());
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  const socket = str(v.socket);
  const sim = simDir(v);
  if (sim !== null) return inSim(sim, listen, withoutSim(ctx.argv).rest, v);

  const verify = verificationOf(v);
  if (!verify) process.stderr.write('warning: --no-verify: signatures are not checked; forged messages are shown as genuine\n');
  const log = rootLogger({ command: 'dashboard' }, process.env.RELAYNET_LOG_LEVEL ?? 'info');
  const nc = await connectForReading(v, 'relay-core dashboard');
  const decoder = await verifyingDecoder(nc, verify);
  const d = await startDashboard({
    listen: socket ? { socket } : listen,
    logger: log,
    sources: {
      // The topology stream from its start (who is in the network), the relay stream from `since`.
      messages: (signal) => follow(nc, ['topology', 'relay'], {}, (stream) => (stream === 'topology' ? { kind: 'all' } : since), signal),
      decode: async (m) => {
        let e = await decoder.decode(m);
        for (let i = 1; i < UNKNOWN_KEY_TRIES && !e.ok && e.skipped.reason === 'unknown-key'; i++) {
          await new Promise((r) => setTimeout(r, UNKNOWN_KEY_RETRY_MS));
          e = await decoder.retry(m);
        }
        return e;
      },
      replay: (relayId, toSeq) => replayText(nc, relayId, { kind: 'seq', seq: toSeq }, verify),
    },
  }).catch((e) => {
    throw new CliError((e as Error).message, 1);
  });
  if (!socket) process.stdout.write(`dashboard at ${httpUrl(d.address as ListenAddress)} (Ctrl-C stops it)\n`);
  const stopped = new Promise<void>((r) => {
    process.once('SIGINT', () => r());
    process.once('SIGTERM', () => r());
  });
  let failure: unknown = null;
  await Promise.race([stopped, d.done.catch((e) => (failure = e))]);
  await d.close();
  await nc.close().catch(() => {});
  if (failure) throw new CliError(`cannot read the streams: ${(failure as Error).message}`, 1);
  return 0;
};

/** What `relay-core replay --relay ID --to SEQ` prints. */
async function replayText(nc: NatsConnection, relayId: string, cut: ReplayCut, verify: Verification | null): Promise<string> {
  const replay = new RelayReplay({ relayId, keepDerivedOps: false });
  await fromNats(nc, relayId, cut, { topology: (e: LogEntry) => replay.addTopology(e), relay: (e: LogEntry) => replay.add(e) }, undefined, verify);
  const r = replay.result();
  if (r.events.relay === 0) throw new Error(`the streams hold no valid event of ${relayId}`);
  return `relay-core replay --relay ${relayId} --to ${cut.kind === 'seq' ? cut.seq : cut.time.toISOString()}\n\n${formatReplay(r)}`;
}

/**
 * `--sim`: the sim's NATS is reachable only inside its namespace, and the browser is out here. The
 * dashboard runs inside (this command again, serving on a unix socket, which crosses namespaces), and
 * this process forwards `--listen` to it.
 */
async function inSim(dir: string, listen: ListenAddress, rest: string[], v: Parameters<Action>[0]): Promise<number> {
  const m = simManifest(dir);
  const tmp = mkdtempSync(join(tmpdir(), 'relay-core-dashboard-'));
  const socket = join(tmp, 'dashboard.sock');
  let forward: Server;
  try {
    forward = await forwardTo(listen, socket);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw new CliError((e as Error).message, 1);
  }
  const a = forward.address() as { address: string; port: number };
  process.stdout.write(`dashboard at ${httpUrl({ host: a.address, port: a.port })} (Ctrl-C stops it)\n`);
  const withoutListen = dropOption(rest, '--listen');
  try {
    return await reexecInSim(dir, 'dashboard', [...withoutListen, '--socket', socket, ...simVerifyArgs(v, rest, m.controlPlane.topologyPublicKey)]);
  } finally {
    await new Promise<void>((r) => forward.close(() => r()));
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A TCP listener whose every connection is piped to the unix socket `socket`. */
function forwardTo(listen: ListenAddress, socket: string): Promise<Server> {
  const open = new Set<Socket>();
  const srv = createServer((c) => {
    const s = createConnection(socket);
    open.add(c);
    c.on('close', () => open.delete(c));
    c.pipe(s).pipe(c);
    const end = () => {
      c.destroy();
      s.destroy();
    };
    c.on('error', end);
    s.on('error', end);
    c.on('close', end);
    s.on('close', end);
  });
  // Closing stops the connections too (a page's event stream never ends by itself).
  const close = srv.close.bind(srv);
  srv.close = (cb) => {
    for (const c of open) c.destroy();
    return close(cb);
  };
  return new Promise((resolve, reject) => {
    srv.once('error', (e) => reject(new Error(`cannot serve the dashboard on ${listen.host}:${listen.port}: ${e.message}`)));
    srv.listen(listen.port, listen.host, () => resolve(srv));
  });
}

/** argv without `--name VALUE` / `--name=VALUE`. */
function dropOption(argv: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) i++;
    else if (!argv[i]!.startsWith(`${name}=`)) out.push(argv[i]!);
  }
  return out;
}

const httpUrl = (a: ListenAddress) => `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/`;
