import { createSocket } from 'node:dgram';
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { connect, credsAuthenticator } from '@nats-io/transport-node';
import { execa } from 'execa';
import { CliError, str, tokenOpt, type Action } from '../args.ts';
import { jsonForTerminal } from '../../events/log.ts';
import {
  clockCheck,
  controlPlaneCheck,
  exitCodeOf,
  formatReport,
  forwardingCheck,
  nftablesCheck,
  natsCheck,
  portCheck,
  privilegeCheck,
  stateDirCheck,
  toolCheck,
  wireguardCheck,
  type Check,
} from '../../doctor/checks.ts';
import { parseListen } from '../../lib/metrics-server.ts';

const PROBE_TIMEOUT_MS = 5_000;

/** `relay-core doctor`: is this host ready to run a relay? One line per check; exit 1 if any failed. */
export const doctor: Action = async (v) => {
  const endpoint = str(v.endpoint);
  const endpointPort = endpoint ? Number(/:(\d{1,5})$/.exec(endpoint)?.[1] ?? Number.NaN) : null;
  if (endpointPort !== null && !(endpointPort > 0 && endpointPort < 65536)) throw new CliError(`--endpoint ${endpoint}: expected HOST:PORT`, 2);
  let metrics: ReturnType<typeof parseListen> | null = null;
  try {
    metrics = str(v.metricsListen) ? parseListen(str(v.metricsListen)!) : null;
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  const relayId = str(v.relayId) ?? null;
  const stateDir = resolve(str(v.stateDir) ?? `.state/relay-${relayId ?? 'ID'}`);
  const url = str(v.controlPlaneUrl)?.replace(/\/+$/, '') ?? null;
  const token = tokenOpt(v) ?? null;
  const nats = str(v.natsUrl) ?? null;

  const checks: Check[] = [];
  checks.push(privilegeCheck(capEff(), process.getuid?.() ?? -1));
  checks.push(
    wireguardCheck({
      module: existsSync('/sys/module/wireguard') || (await run(['modprobe', '-n', '-q', 'wireguard'])).ok,
      wireguardGo: await version(['wireguard-go', '--version']),
      tun: existsSync('/dev/net/tun'),
      tunOpen: openable('/dev/net/tun'),
      inotifyInstances: readNumber('/proc/sys/fs/inotify/max_user_instances'),
    }),
  );
  checks.push(toolCheck('wg', 'wireguard-tools', await run(['wg', '--version'])));
  checks.push(toolCheck('ip', 'iproute2', await run(['ip', '-V'])));
  checks.push(toolCheck('nft', 'nftables', await run(['nft', '--version'])));
  checks.push(nftablesCheck(await run(['nft', 'list', 'tables'])));
  checks.push(forwardingCheck(forwarding()));
  checks.push(
    portCheck(
      'wireguard port',
      endpointPort === null ? '--endpoint HOST:PORT' : `--endpoint UDP port ${endpointPort}`,
      endpointPort === null ? null : await udpFree(endpointPort),
    ),
  );
  checks.push(
    portCheck(
      'metrics port',
      metrics ? `--metrics-listen ${metrics.host}:${metrics.port}` : '--metrics-listen to check its port',
      metrics ? await tcpFree(metrics.host, metrics.port) : null,
    ),
  );
  const cp = url && token && relayId ? await heartbeat(url, token, relayId) : null;
  checks.push(clockCheck(cp?.status ? cp.localMs : null, cp?.date ?? null));
  checks.push(controlPlaneCheck(cp, url && token && relayId ? url : null));
  checks.push(natsCheck(nats ? await natsProbe(nats, join(stateDir, 'nats.creds')) : null, nats));
  checks.push(stateDirCheck(stateDirProbe(stateDir)));

  process.stdout.write(v.json ? `${jsonForTerminal({ ready: exitCodeOf(checks) === 0, checks })}\n` : formatReport(checks));
  return exitCodeOf(checks);
};

function capEff(): string | null {
  try {
    return /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

async function run(argv: string[]): Promise<{ ok: boolean; output: string }> {
  const r = await execa(argv[0]!, argv.slice(1), { reject: false, all: true, timeout: PROBE_TIMEOUT_MS });
  return { ok: r.exitCode === 0, output: r.all || (r.failed && r.exitCode === undefined ? String(r.shortMessage ?? '') : '') };
}

async function version(argv: string[]): Promise<string | null> {
  const r = await run(argv);
  return r.ok ? r.output.trim().split('\n')[0] || argv[0]! : null;
}

function forwarding(): { value: string | null; writable: boolean } {
  const f = '/proc/sys/net/ipv4/ip_forward';
  let value: string | null = null;
  try {
    value = readFileSync(f, 'utf8');
  } catch {
    return { value: null, writable: false };
  }
  try {
    accessSync(f, constants.W_OK);
    return { value, writable: true };
  } catch {
    return { value, writable: false };
  }
}

function udpFree(port: number): Promise<{ free: boolean; error: string | null }> {
  return new Promise((done) => {
    const s = createSocket('udp4');
    s.once('error', (e) => {
      s.close();
      done({ free: false, error: e.message });
    });
    s.bind(port, () => s.close(() => done({ free: true, error: null })));
  });
}

function tcpFree(host: string, port: number): Promise<{ free: boolean; error: string | null }> {
  return new Promise((done) => {
    const s = createServer();
    s.once('error', (e) => done({ free: false, error: e.message }));
    s.listen(port, host, () => s.close(() => done({ free: true, error: null })));
  });
}

/** A heartbeat for `relayId`: whether the control plane answers, takes the token, and what time it says it is. */
async function heartbeat(url: string, token: string, relayId: string) {
  const localMs = Date.now();
  try {
    const r = await fetch(`${url}/functions/v1/heartbeat`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, apikey: token, 'content-type': 'application/json' },
      body: JSON.stringify({ relayId }),
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
    const body = (await r.json().catch(() => null)) as { message?: string } | null;
    return {
      status: r.status,
      error: null,
      message: typeof body?.message === 'string' ? body.message.slice(0, 300) : null,
      date: r.headers.get('date'),
      localMs,
    };
  } catch (e) {
    return { status: null, error: (e as Error).message, message: null, date: null, localMs };
  }
}

async function natsProbe(servers: string, credsFile: string): Promise<{ connected: boolean; withCredentials: boolean; error: string | null }> {
  const withCredentials = existsSync(credsFile);
  try {
    const nc = await connect({
      servers: servers.split(','),
      name: 'relay-core doctor',
      timeout: PROBE_TIMEOUT_MS,
      maxReconnectAttempts: 0,
      ...(withCredentials ? { authenticator: credsAuthenticator(readFileSync(credsFile)) } : {}),
    });
    await nc.close();
    return { connected: true, withCredentials, error: null };
  } catch (e) {
    const msg = (e as Error).message;
    // Without credentials a bus that requires them still answered: it is reachable, and the relay gets its own at admission.
    if (!withCredentials && /authoriz|authentic/i.test(msg)) return { connected: true, withCredentials, error: null };
    return { connected: false, withCredentials, error: msg };
  }
}

const KEY_FILES = ['wg.key', 'identity.key', 'nats.nk', 'nats.creds', 'token'];

function stateDirProbe(dir: string) {
  const writable = (p: string) => {
    try {
      accessSync(p, constants.W_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (!existsSync(dir)) {
    let parent = dirname(dir);
    while (!existsSync(parent) && parent !== dirname(parent)) parent = dirname(parent);
    return { dir, exists: false, writable: false, parentWritable: writable(parent), loose: [] };
  }
  const loose = KEY_FILES.filter((f) => existsSync(join(dir, f)) && (statSync(join(dir, f)).mode & 0o077) !== 0);
  return { dir, exists: true, writable: writable(dir), parentWritable: true, loose };
}

/** A number from a /proc file, or null when it cannot be read. */
function readNumber(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/** Whether this user may open a file for reading and writing (false when it is absent). */
function openable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
