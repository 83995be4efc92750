import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, intOpt, str, type Command } from '../args.ts';
import { startLocalControlPlane } from '../../control-plane/local.ts';
import { startNatsServer } from '../../devnet/nats-server.ts';
import { eventually, RelayProcess } from '../../devnet/relay-process.ts';
import type { RelayStatus } from '../../daemon/relay-daemon.ts';
import { rootLogger } from '../../lib/logger.ts';

const usage = `Usage: relay-core devnet [--relays N] [--state-dir DIR] [--port P] [--db-url URL] [--once]

Run a live relay network on this machine's loopback: a real nats-server with JetStream, the local
control plane (Edge Functions on Deno behind the gateway, embedded Postgres unless --db-url), and
N 'relay-core run' processes, each with its own scoped relay token. Waits until every relay serves
the same topology, prints it, then shows live status until Ctrl-C, when relays deregister and
everything it started is stopped. Relays program only an in-memory model of the host (--kernel
memory); real WireGuard links between network namespaces come with 'relay-core sim'.

Options:
  --relays N        number of relays, 1-50 (default 3)
  --state-dir DIR   where keys, logs and data go (default ./.state/devnet)
  --port P          control-plane gateway port (default: a free one)
  --db-url URL      use this PostgreSQL instead of the embedded one
  --once            exit (cleaning up) as soon as the network has converged
  -h, --help        show this help`;

export const command: Command = {
  name: 'devnet',
  summary: 'live multi-relay network on loopback',
  usage,
  options: { relays: { type: 'string' }, 'state-dir': { type: 'string' }, port: { type: 'string' }, 'db-url': { type: 'string' }, once: { type: 'boolean' } },
  async run(v) {
    const n = intOpt(v.relays, 'relays', 3, 1, 50);
    const dir = resolve(str(v['state-dir'], 'state-dir') ?? '.state/devnet');
    const port = intOpt(v.port, 'port', 0, 0, 65535);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const log = rootLogger({ component: 'devnet' }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
    const out = (s: string) => process.stdout.write(s + '\n');

    const cleanup: (() => Promise<unknown>)[] = [];
    const relays: RelayProcess[] = [];
    let stopping = false;
    const teardown = async () => {
      if (stopping) return;
      stopping = true;
      out('devnet: stopping relays (they deregister), control plane and NATS ...');
      await Promise.all(relays.map((r) => r.stop('SIGTERM')));
      for (const c of cleanup.reverse()) await c().catch(() => {});
    };
    let interrupted = false;
    const onSignal = () => {
      interrupted = true;
      void teardown().then(() => process.exit(0));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    try {
      const nats = await startNatsServer(join(dir, 'nats'));
      cleanup.push(() => nats.stop());
      out(`devnet: nats-server (JetStream) at ${nats.url}`);
      const cp = await startLocalControlPlane({ stateDir: join(dir, 'control-plane'), port, dbUrl: str(v['db-url'], 'db-url'), natsServers: [nats.url], logger: log });
      cleanup.push(() => cp.stop());
      out(`devnet: control plane at ${cp.url} (database ${cp.dbUrl.replace(/:[^:@/]*@/, ':***@')})`);
      for (let i = 1; i <= n; i++) {
        const id = `relay-${i}`;
        relays.push(
          new RelayProcess({
            relayId: id,
            stateDir: join(dir, id),
            endpoint: `198.51.100.${i}:51820`,
            controlPlaneUrl: cp.url,
            token: await cp.mintRelayToken(id, 30 * 24 * 3600),
            region: `region-${((i - 1) % 3) + 1}`,
          }).start(),
        );
      }
      out(`devnet: started ${n} relays; waiting for them to agree on the topology ...`);
      const st = await eventually(
        'every relay to serve the same topology of all relays',
        async () => {
          for (const r of relays) if (!r.child) throw new Error(`${r.opts.relayId} exited: ${r.stderrTail.slice(-500)}`);
          const s = await Promise.all(relays.map((r) => r.status()));
          return s.every((x) => x.state === 'serving' && x.relays.length === n) && new Set(s.map((x) => x.topologyDigest)).size === 1 ? s : null;
        },
        90_000,
      );
      out(render(st));
      out(`devnet: converged. Logs: ${dir}/relay-*/relay.log; 'relay-core status --state-dir ${dir}/relay-1' shows one relay.`);
      if (v.once || interrupted) {
        await teardown();
        return 0;
      }
      out('devnet: live status every 5 s; Ctrl-C to stop.');
      for (;;) {
        await new Promise((r) => setTimeout(r, 5_000));
        if (stopping) break;
        const s = await Promise.all(relays.map((r) => r.status().catch(() => null)));
        out(render(s.filter((x): x is RelayStatus => x !== null)));
      }
      return 0;
    } catch (e) {
      await teardown();
      throw new CliError((e as Error).message, 1);
    }
  },
};

function render(st: RelayStatus[]): string {
  const lines = [`${'RELAY'.padEnd(10)} ${'STATE'.padEnd(10)} ${'MESH'.padEnd(13)} ${'POOL'.padEnd(17)} ${'REV'.padStart(4)} ${'PEERS'.padStart(5)} ${'APPLIED'.padStart(7)} ${'REJECTED'.padStart(8)} BUS`];
  for (const s of st) {
    const rej = Object.values(s.counters.rejected).reduce((a, b) => a + b, 0);
    lines.push(
      `${s.relayId.padEnd(10)} ${s.state.padEnd(10)} ${(s.meshAddress ?? '-').padEnd(13)} ${(s.clientPool ?? '-').padEnd(17)} ${String(s.revision).padStart(4)} ${String(s.relays.length - 1).padStart(5)} ${String(s.counters.applied).padStart(7)} ${String(rej).padStart(8)} ${s.bus.connected ? 'up' : 'down'}`,
    );
  }
  return lines.join('\n');
}
