/**
 * Session setup time: from the `connect-client` request to its answer, which the control plane gives
 * only once the entry relay has programmed the session and confirmed it. Measured side by side in one
 * run on two networks of 2 relays with the same control plane build:
 *
 * - in-memory kernel: nats-server (decentralized auth, trusting the control plane's authority), the
 *   local control plane and `relay-core run --kernel memory` on loopback (what admission, the bus, the
 *   actors and the confirmation cost);
 * - real WireGuard: `relay-core sim up --relays 2` (wireguard-go, ip, nft in namespaces).
 *
 * Each opens and closes N sessions one after another (src/sim/session-loop.ts) and reports p50/p90/max.
 *
 *   node bench/sessions.ts [N]      (default 100; needs root for the sim)
 */
import { cpSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { startLocalControlPlane } from '../src/control-plane/local.ts';
import { eventually, RELAY_CORE_BIN, RelayProcess } from '../src/devnet/relay-process.ts';
import { rootLogger } from '../src/lib/logger.ts';
import { CONTROL_PLANE_PORT, svcNamespace } from '../src/sim/layout.ts';
import { readManifest } from '../src/sim/manifest.ts';
import { startAuthedNats } from '../test/support/authed-nats.ts';

const count = Number(process.argv[2] ?? 100);
const LOOP = join(import.meta.dirname, '../src/sim/session-loop.ts');

interface LoopResult {
  count: number;
  openMs: number[];
  openedAt: number[];
}

/** A session whose setup took this long is looked into: the logs of its network are kept. */
const SLOW_MS = 2_000;

/** Keep `dirs` (the network's logs) when a session was slow, and say which one and where. */
function keepIfSlow(name: string, r: LoopResult, dirs: string[]): void {
  const slow = r.openMs.flatMap((ms, i) => (ms > SLOW_MS ? [{ i, ms, at: new Date(r.openedAt[i]!).toISOString() }] : []));
  if (slow.length === 0) return;
  const keep = mkdtempSync(join(tmpdir(), `relay-core-bench-sessions-slow-`));
  // Logs only (never keys, credentials or sockets).
  for (const d of dirs)
    cpSync(d, join(keep, d.replaceAll('/', '_')), { recursive: true, filter: (src) => src.endsWith('.log') || statSync(src).isDirectory() });
  process.stderr.write(`${name}: ${slow.length} session(s) over ${SLOW_MS} ms: ${JSON.stringify(slow)}; logs kept in ${keep}\n`);
}

const parse = (stdout: string): LoopResult => JSON.parse(stdout.trim().split('\n').at(-1)!) as LoopResult;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function memoryKernel(root: string): Promise<LoopResult> {
  const log = rootLogger({ bench: 'sessions' }, 'warn');
  const nats = (await startAuthedNats(join(root, 'nats'), join(root, 'cp'))).server;
  const cp = await startLocalControlPlane({ stateDir: join(root, 'cp'), natsServers: [nats.url], logger: log }).catch(async (e) => {
    await nats.stop();
    throw e;
  });
  const relays = [1, 2].map((n) =>
    new RelayProcess({
      relayId: `relay-${n}`,
      stateDir: join(root, `relay-${n}`),
      endpoint: `198.51.100.${n}:51820`,
      controlPlaneUrl: cp.url,
      token: cp.serviceRoleKey,
      kernel: 'memory',
    }).start(),
  );
  try {
    await eventually(
      '2 relays serving',
      async () => (await Promise.all(relays.map((r) => r.status().catch(() => null)))).every((s) => s?.state === 'serving' && s.relays.length === 2),
      60_000,
    );
    const keyFile = join(root, 'service-role.key');
    writeFileSync(keyFile, cp.serviceRoleKey, { mode: 0o600 });
    const r = await execa(
      process.execPath,
      [LOOP, '--url', cp.url, '--token-file', keyFile, '--entry', 'relay-1', '--exit', 'relay-2', '--count', String(count)],
      { reject: false, timeout: 900_000 },
    );
    if (r.exitCode !== 0) throw new Error(`session loop (memory): ${r.stderr}`);
    const out = parse(r.stdout);
    keepIfSlow('in-memory', out, [join(root, 'relay-1'), join(root, 'relay-2'), join(root, 'cp')]);
    return out;
  } finally {
    await Promise.all(relays.map((r) => r.stop()));
    await cp.stop();
    await nats.stop();
  }
}

async function realWireGuard(root: string): Promise<LoopResult> {
  const dir = join(root, 'sim');
  const sim = (args: string[]) => execa(RELAY_CORE_BIN, ['sim', ...args, '--state-dir', dir], { reject: false, timeout: 300_000 });
  try {
    const up = await sim(['up', '--relays', '2', '--timeout', '120']);
    if (up.exitCode !== 0) throw new Error(`sim up: ${up.stderr || up.stdout}`);
    const m = readManifest(dir)!;
    const r = await execa(
      'ip',
      [
        'netns',
        'exec',
        svcNamespace(m.simId),
        process.execPath,
        LOOP,
        '--url',
        `http://127.0.0.1:${CONTROL_PLANE_PORT}`,
        '--token-file',
        m.controlPlane.serviceRoleKeyFile,
        '--entry',
        'relay-1',
        '--exit',
        'relay-2',
        '--count',
        String(count),
      ],
      { reject: false, timeout: 900_000 },
    );
    if (r.exitCode !== 0) throw new Error(`session loop (sim): ${r.stderr}`);
    const out = parse(r.stdout);
    keepIfSlow('real WireGuard', out, [dir]);
    return out;
  } finally {
    await sim(['down']);
  }
}

const root = mkdtempSync(join(tmpdir(), 'relay-core-bench-sessions-'));
try {
  const mem = await memoryKernel(root);
  const wg = await realWireGuard(root);
  const row = (name: string, r: LoopResult) =>
    `| ${name} | ${r.count} | ${pct(r.openMs, 50).toFixed(0)} | ${pct(r.openMs, 90).toFixed(0)} | ${Math.max(...r.openMs).toFixed(0)} |`;
  console.log('| entry kernel | sessions | setup p50 ms | p90 ms | max ms |');
  console.log('|---|---|---|---|---|');
  console.log(row('in-memory model (loopback)', mem));
  console.log(row('real WireGuard (sim, wireguard-go)', wg));
  console.log(`\nratio real / in-memory (p50): ${(pct(wg.openMs, 50) / pct(mem.openMs, 50)).toFixed(2)}`);
} finally {
  rmSync(root, { recursive: true, force: true });
}
