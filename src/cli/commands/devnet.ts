import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, str, type Action } from '../args.ts';
import { startLocalControlPlane } from '../../control-plane/local.ts';
import { loadOrCreateBusAuthority } from '../../control-plane/bus-authority.ts';
import { startNatsServer } from '../../devnet/nats-server.ts';
import { eventually, RelayProcess } from '../../devnet/relay-process.ts';
import type { RelayStatus } from '../../daemon/relay-status.ts';
import { rootLogger } from '../../lib/logger.ts';
import { table } from '../../lib/table.ts';

/** `relay-core devnet`: a live relay network on loopback until Ctrl-C (or, with --once, until it converges). */
export const devnet: Action = async (v) => {
  const n = v.relays as number;
  const dir = resolve(v.stateDir as string);
  const port = v.port as number;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const log = rootLogger({ component: 'devnet' }, process.env.RELAYNET_LOG_LEVEL ?? 'warn');
  const out = (s: string) => process.stdout.write(s + '\n');

  const cleanup: { what: string; stop: () => Promise<unknown> }[] = [];
  const relays: RelayProcess[] = [];
  let stopping = false;
  const teardown = async () => {
    if (stopping) return;
    stopping = true;
    out('devnet: stopping relays (they deregister), control plane and NATS ...');
    const codes = await Promise.all(relays.map((r) => r.stop('SIGTERM')));
    for (const [i, code] of codes.entries())
      out(`devnet: ${relays[i]!.opts.relayId} stopped${code === null ? '' : code === 0 ? ' (deregistered)' : ` (exit ${code}; see its relay.log)`}`);
    for (const c of cleanup.reverse()) {
      await c
        .stop()
        .then(() => out(`devnet: ${c.what} stopped`))
        .catch((e: unknown) => out(`devnet: ${c.what} did not stop cleanly: ${(e as Error).message}`));
    }
  };
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    void teardown().then(() => process.exit(0));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    // NATS decentralized auth: nats-server trusts the control plane's authority (made first).
    const bus = await loadOrCreateBusAuthority(join(dir, 'control-plane'));
    const nats = await startNatsServer(join(dir, 'nats'), { authConf: bus.authConf });
    cleanup.push({ what: 'nats-server', stop: () => nats.stop() });
    out(`devnet: nats-server (JetStream, NATS JWT auth) at ${nats.url}; operator's credentials in ${bus.dir}`);
    const cp = await startLocalControlPlane({ stateDir: join(dir, 'control-plane'), port, dbUrl: str(v.dbUrl), natsServers: [nats.url], logger: log });
    cleanup.push({ what: 'control plane', stop: () => cp.stop() });
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
    // A terminal gets the table every 5 s; a pipe or a file only when it changed.
    const tty = process.stdout.isTTY === true;
    out(`devnet: live status every 5 s${tty ? '' : ' when it changes'}; Ctrl-C to stop.`);
    let shown = render(st);
    for (;;) {
      await new Promise((r) => setTimeout(r, 5_000));
      if (stopping) break;
      const s = await Promise.all(relays.map((r) => r.status().catch(() => null)));
      const table = render(s.filter((x): x is RelayStatus => x !== null));
      if (tty || table !== shown) out(table);
      shown = table;
    }
    return 0;
  } catch (e) {
    await teardown();
    throw new CliError((e as Error).message, 1);
  }
};

const DEVNET_COLUMNS = [
  { width: 10 },
  { width: 10 },
  { width: 13 },
  { width: 17 },
  { width: 4, align: 'right' },
  { width: 5, align: 'right' },
  { width: 7, align: 'right' },
  { width: 8, align: 'right' },
  {},
] as const;

function render(st: RelayStatus[]): string {
  const rows = st.map((s) => {
    const rej = Object.values(s.counters.rejected).reduce((a, b) => a + b, 0);
    return [
      s.relayId,
      s.state,
      s.meshAddress ?? '-',
      s.clientPool ?? '-',
      String(s.revision),
      String(s.relays.length - 1),
      String(s.counters.applied),
      String(rej),
      s.bus.connected ? 'up' : 'down',
    ];
  });
  return table(DEVNET_COLUMNS, [['RELAY', 'STATE', 'MESH', 'POOL', 'REV', 'PEERS', 'APPLIED', 'REJECTED', 'BUS'], ...rows], { gap: ' ' }).join('\n');
}
