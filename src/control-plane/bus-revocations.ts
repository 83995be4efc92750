import postgres from 'postgres';
import { type BusAuthority, authorityJwts, inboxPrefixFor } from '../contract/bus-auth.ts';
import { connectBus, credsFileAuth } from '../bus/connection.ts';
import type { Logger } from '../lib/logger.ts';

/** A relay's nkey is revoked for every JWT issued up to (and including) this second: the ban's. Pure. */
export function revocationsOf(rows: readonly { bus_key: string; banned_at: Date }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of rows) out[r.bus_key] = Math.floor(r.banned_at.getTime() / 1000) + 1;
  return out;
}

export interface BusRevocations {
  /** Push the current bans now (and wait for nats-server's answer). */
  sync(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/**
 * Keeps nats-server's RELAYNET account revoking the nkeys of banned relays (docs/security.md, "Bans"):
 * it reads the bans every `pollMs`, and when they change signs the account JWT again with them as its
 * revocations (with the operator key) and pushes it with the system user (`$SYS.REQ.CLAIMS.UPDATE`).
 * nats-server then refuses those users' JWTs and closes their connections. The first round always
 * pushes, so a restarted nats-server or control plane converges.
 */
export async function startBusRevocations(opts: {
  dbUrl: string;
  natsServers: string[];
  authority: BusAuthority;
  systemCreds: string;
  logger: Logger;
  pollMs?: number;
}): Promise<BusRevocations> {
  const log = opts.logger.child({ component: 'bus-revocations' });
  const sql = postgres(opts.dbUrl, { max: 1, prepare: false, onnotice: () => {}, connect_timeout: 10 });
  const nc = await connectBus({
    servers: opts.natsServers,
    auth: credsFileAuth(opts.systemCreds, inboxPrefixFor({ kind: 'system' })),
    name: 'relay-core bus-revocations',
    logger: log,
  });
  let pushed: string | null = null;
  let stopped = false;
  let failing = false;

  const read = async () =>
    revocationsOf(
      await sql<{ bus_key: string; banned_at: Date }[]>`
        select r.bus_key, b.banned_at from relaynet.relay_bans b join relaynet.relays r on r.id = b.relay_id where r.bus_key is not null`,
    );

  const push = async (revocations: Record<string, number>) => {
    const { accountJwt } = await authorityJwts(opts.authority, { revocations });
    const reply = await nc.request('$SYS.REQ.CLAIMS.UPDATE', accountJwt, { timeout: 5_000 });
    const answer = reply.json<{ data?: { code?: number; message?: string }; error?: { code?: number; description?: string } }>();
    if (answer.error || (answer.data?.code !== undefined && answer.data.code !== 200)) {
      throw new Error(`nats-server refused the account update: ${answer.error?.description ?? answer.data?.message ?? JSON.stringify(answer)}`);
    }
  };

  const sync = async () => {
    const revocations = await read();
    const key = JSON.stringify(Object.entries(revocations).sort());
    if (key !== pushed) {
      await push(revocations);
      pushed = key;
      log.info({ revoked: Object.keys(revocations).length }, 'NATS revocations pushed');
    }
    return revocations;
  };

  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> = Promise.resolve();
  const tick = () => {
    running = sync().then(
      () => {
        if (failing) log.info('NATS revocations in sync again');
        failing = false;
      },
      (e: unknown) => {
        if (!failing) log.warn({ err: String((e as Error)?.message ?? e) }, 'cannot sync NATS revocations yet; retrying');
        failing = true;
      },
    );
    void running.then(() => {
      if (!stopped) timer = setTimeout(tick, opts.pollMs ?? 1_000);
    });
  };
  tick();
  return {
    sync: async () => {
      await running;
      return sync();
    },
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running.catch(() => {});
      await nc.close().catch(() => {});
      await sql.end({ timeout: 2 }).catch(() => {});
    },
  };
}
