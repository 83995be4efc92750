import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type postgres from 'postgres';
import { MIGRATIONS_DIR } from './paths.ts';

export { MIGRATIONS_DIR };

/** The table the runner records applied migrations in (ours; Supabase's CLI keeps its own). */
export const MIGRATIONS_TABLE = 'public.relaynet_migrations';

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

/** supabase/migrations/*.sql in name order (Supabase's order: the timestamp prefix). */
export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((name) => {
      const sql = readFileSync(join(dir, name), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    });
}

/**
 * Apply the migrations not applied yet, in order, in one transaction, recording each (name and
 * checksum) in `public.relaynet_migrations`. Idempotent; concurrent runners serialise on a lock of
 * that table. Refuses to go on when an applied migration's file has changed since. Returns the names
 * it applied.
 */
export async function migrate(sql: postgres.Sql, dir = MIGRATIONS_DIR): Promise<string[]> {
  const migrations = readMigrations(dir);
  await sql.unsafe(
    `create table if not exists ${MIGRATIONS_TABLE} (name text primary key, checksum text not null, applied_at timestamptz not null default now())`,
  );
  return sql.begin(async (tx) => {
    await tx.unsafe(`lock table ${MIGRATIONS_TABLE} in exclusive mode`);
    const done = new Map((await tx.unsafe(`select name, checksum from ${MIGRATIONS_TABLE}`)).map((r) => [r.name as string, r.checksum as string]));
    const applied: string[] = [];
    for (const m of migrations) {
      const had = done.get(m.name);
      if (had !== undefined) {
        if (had !== m.checksum) throw new Error(`migration ${m.name} was changed after it was applied; add a new migration instead`);
        continue;
      }
      try {
        await tx.unsafe(m.sql);
      } catch (e) {
        throw new Error(`migration ${m.name} failed: ${(e as Error).message}`);
      }
      await tx.unsafe(`insert into ${MIGRATIONS_TABLE} (name, checksum) values ($1, $2)`, [m.name, m.checksum]);
      applied.push(m.name);
    }
    return applied;
  });
}
