// The Postgres connection of a function instance: postgres.js, as Supabase recommends for Deno.
// prepare: false works behind Supabase's transaction pooler and the local PGlite multiplexer alike.
import postgres from 'npm:postgres@3.4.9';
import { onOwnConnection } from './transaction.ts';

export type Sql = postgres.Sql;
/** A connection inside a transaction (`transaction`). */
export type Tx = postgres.ReservedSql;

let sql: Sql | null = null;

export function db(url: string, fn: string): Sql {
  sql ??= postgres(url, {
    max: 3,
    prepare: false,
    idle_timeout: 20,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: `relaynet-${fn}` },
  });
  return sql;
}

/** `fn` in a transaction on a connection of its own (_shared/transaction.ts says why not `sql.begin`). */
export const transaction = <T>(sql: Sql, fn: (tx: Tx) => Promise<T>): Promise<T> => onOwnConnection(sql, fn);
