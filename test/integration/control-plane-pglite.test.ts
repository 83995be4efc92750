import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/control-plane/embedded-postgres.ts';
import { tempDir } from '../support/temp.ts';

/**
 * The embedded database: PGlite's single session shared by many wire-protocol clients. Concurrent
 * clients must never see each other's extended-protocol messages or transactions.
 */
describe('embedded PGlite over the wire protocol', () => {
  let tmp: ReturnType<typeof tempDir>;
  let pg: EmbeddedPostgres;
  const clients: postgres.Sql[] = [];
  const connect = (max = 4) => {
    const c = postgres(pg.url, { max, prepare: false, onnotice: () => {} });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    tmp = tempDir('pglite');
    pg = await startEmbeddedPostgres({ dataDir: `${tmp.dir}/data` });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end({ timeout: 1 }).catch(() => {})));
    await pg?.stop();
    tmp?.remove();
  });

  it('keeps concurrent parameterised queries and transactions of many connections apart', async () => {
    const admin = connect(1);
    await admin`create table counter (id int primary key, n int not null)`;
    await admin`insert into counter values (1, 0)`;
    const pool = Array.from({ length: 5 }, () => connect(4));
    let wrong = 0;
    await Promise.all(
      pool.flatMap((sql, c) =>
        Array.from({ length: 4 }, async (_, w) => {
          for (let i = 0; i < 25; i++) {
            const v = c * 10_000 + w * 100 + i;
            const [r] = await sql`select ${v}::int as v, ${`s${v}`}::text as s`;
            if (r!.v !== v || r!.s !== `s${v}`) wrong++;
            await sql
              .begin(async (tx) => {
                const [row] = await tx`select n from counter where id = ${1} for update`;
                await tx`update counter set n = ${row!.n + 1} where id = ${1}`;
                if (i % 5 === 0) throw new Error('roll back');
              })
              .catch((e: Error) => {
                if (e.message !== 'roll back') throw e;
              });
          }
        }),
      ),
    );
    expect(wrong).toBe(0);
    const [row] = await admin`select n from counter`;
    expect(row!.n).toBe(5 * 4 * 20);
  });

  it('rolls back the transaction of a client that disappears, and serves the others on', async () => {
    const admin = connect(1);
    const dying = postgres(pg.url, { max: 1, prepare: false, onnotice: () => {} });
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const tx = dying
      .begin(async (t) => {
        await t`update counter set n = -1`;
        entered();
        await new Promise((r) => setTimeout(r, 60_000));
      })
      .catch(() => {});
    await inside;
    await dying.end({ timeout: 0 });
    await tx;
    const [row] = await admin`select n from counter`;
    expect(row!.n).toBe(400);
  });

  it('hands each notification to the connections listening on its channel, and only to them', async () => {
    const a = connect(2);
    const b = connect(2);
    const other = connect(2);
    const writer = connect(2);
    const got: Record<string, string[]> = { a: [], b: [], other: [] };
    const la = await a.listen('outbox', (x) => got.a!.push(x));
    await b.listen('Outbox "quoted"', (x) => got.b!.push(x));
    await b.listen('outbox', (x) => got.b!.push(`outbox:${x}`));
    await other.listen('elsewhere', (x) => got.other!.push(x));
    // Inside a transaction the notification comes with the commit; a rolled-back one never comes.
    await writer.begin(async (tx) => {
      await tx`select pg_notify('outbox', 'one')`;
      await tx`select pg_notify(${'Outbox "quoted"'}, 'two')`;
    });
    await writer
      .begin(async (tx) => {
        await tx`select pg_notify('outbox', 'rolled back')`;
        throw new Error('roll back');
      })
      .catch(() => {});
    await writer`select pg_notify('outbox', 'three')`;
    const settle = async (n: number) => {
      for (let i = 0; i < 100 && got.a!.length + got.b!.length < n; i++) await new Promise((r) => setTimeout(r, 20));
    };
    await settle(5);
    expect(got).toEqual({ a: ['one', 'three'], b: ['outbox:one', 'two', 'outbox:three'], other: [] });
    // One connection's UNLISTEN leaves the others listening on the channel.
    await la.unlisten();
    await writer`select pg_notify('outbox', 'four')`;
    await settle(6);
    expect(got.a).toEqual(['one', 'three']);
    expect(got.b).toEqual(['outbox:one', 'two', 'outbox:three', 'outbox:four']);
    // The notifications never reached the writer's replies: its queries still answer as they should.
    const [r] = await writer`select ${7}::int as v`;
    expect(r!.v).toBe(7);
  });

  it('persists its data across restarts', async () => {
    await Promise.all(clients.splice(0).map((c) => c.end({ timeout: 1 })));
    await pg.stop();
    pg = await startEmbeddedPostgres({ dataDir: `${tmp.dir}/data` });
    const [row] = await connect(1)`select n from counter`;
    expect(row!.n).toBe(400);
  });

  it('refuses connections over its limit with a Postgres error', async () => {
    const small = await startEmbeddedPostgres({ dataDir: 'memory://', maxConnections: 1 });
    const a = postgres(small.url, { max: 1, prepare: false });
    const b = postgres(small.url, { max: 1, prepare: false, connect_timeout: 5 });
    try {
      await a`select 1`;
      await expect(b`select 1`).rejects.toThrow(/too many clients/);
    } finally {
      await a.end({ timeout: 1 });
      await b.end({ timeout: 1 });
      await small.stop();
    }
  });
});
