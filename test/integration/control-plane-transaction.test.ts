import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onOwnConnection } from '../../supabase/functions/_shared/transaction.ts';
import { startTestPostgres, type TestPostgres } from '../support/postgres.ts';

/**
 * The functions' transactions (supabase/functions/_shared/transaction.ts) under a storm on a real
 * PostgreSQL, with postgres.js at the functions' version (3.4.9) and their pool (3 connections): every
 * connection busy, transactions and plain queries fired together (the shape of porsager/postgres#823).
 * With `sql.begin` that storm fails transactions with UNSAFE_TRANSACTION (shown first, so the storm is
 * known to reach the bug); on a reserved connection none fails, every transaction's rows are committed,
 * and no connection is left inside a transaction.
 */

const ROUNDS = 20;
/** postgres.js reads `max_pipeline` (queries sent ahead on one connection, default 100) but its types leave it out. */
const pool = (url: string, pipeline: number, name = 'storm') =>
  postgres(url, { max: 3, prepare: false, onnotice: () => {}, connection: { application_name: name }, ...({ max_pipeline: pipeline } as object) });
type Query = (strings: TemplateStringsArray, ...values: (string | number)[]) => PromiseLike<unknown>;
const TRANSACTIONS = 5;

describe('control-plane transactions on a connection of their own', () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startTestPostgres();
    const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    await sql`create table storm (round int, n int)`;
    await sql.end();
  }, 120_000);
  afterAll(async () => {
    await pg?.stop();
  });

  /** One storm per round: 3 slow queries, 6 quick ones and TRANSACTIONS transactions at once; the errors' codes. */
  const storm = async (sql: postgres.Sql, tx: (body: (c: Query) => PromiseLike<unknown>) => Promise<unknown>): Promise<string[]> => {
    const errors: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const all: Promise<unknown>[] = [];
      // In this order (each query is sent as it is made, as BEGIN is): each connection busy with a slow
      // query and one more sent after it (without parameters: a query with them is described first and
      // fills its connection), then the transactions, then more queries.
      for (let i = 0; i < 3; i++) all.push(sql`select pg_sleep(0.05)`.execute());
      for (let i = 0; i < 3; i++) all.push(sql`select 1`.execute());
      for (let n = 0; n < TRANSACTIONS; n++) all.push(tx((c) => c`insert into storm values (${round}, ${n})`));
      for (let i = 0; i < 3; i++) all.push(sql`select 1`.execute());
      for (const r of await Promise.allSettled(all)) if (r.status === 'rejected') errors.push((r.reason as { code?: string }).code ?? String(r.reason));
    }
    return errors;
  };

  /** The pool closed, and the table emptied for the next test. */
  const endAndEmpty = async (sql: postgres.Sql) => {
    await sql.end({ timeout: 5 });
    const clean = postgres(pg.url, { max: 1 });
    await clean`truncate storm`;
    await clean.end();
  };

  it('sql.begin fails under the storm (the bug this works around)', async () => {
    const sql = pool(pg.url, 2);
    try {
      const errors = await storm(sql, (body) => sql.begin((c) => body(c)));
      expect(errors.filter((e) => e === 'UNSAFE_TRANSACTION').length, `errors: ${errors.join(', ')}`).toBeGreaterThan(0);
    } finally {
      await endAndEmpty(sql);
    }
  }, 120_000);

  for (const pipeline of [2, 100]) {
    it(`commits every transaction and fails none on a reserved connection (max_pipeline ${pipeline})`, async () => {
      const sql = pool(pg.url, pipeline);
      try {
        const errors = await storm(sql, (body) => onOwnConnection(sql, async (c) => body(c)));
        expect(errors).toEqual([]);
        const [committed] = await sql`select count(*)::int as count from storm`;
        expect(committed!.count).toBe(ROUNDS * TRANSACTIONS);
        const open = await sql`select count(*)::int as count from pg_stat_activity where application_name = 'storm' and state like 'idle in transaction%'`;
        expect(open[0]!.count).toBe(0);
        // A transaction that throws is rolled back, and its connection is usable afterwards.
        await expect(
          onOwnConnection(sql, async (c) => {
            await c`insert into storm values (-1, -1)`;
            throw new Error('no');
          }),
        ).rejects.toThrow('no');
        const [rolled] = await sql`select count(*)::int as count from storm where round = -1`;
        expect(rolled!.count).toBe(0);
        expect(await onOwnConnection(sql, async (c) => (await c`select 7 as x`)[0]!.x)).toBe(7);
      } finally {
        await endAndEmpty(sql);
      }
    }, 120_000);
  }
});
