// Transactions on a connection of their own. postgres.js 3.4.9's `sql.begin` can send BEGIN on a
// connection busy with other requests' queries without reserving it (porsager/postgres#823 and #1189:
// when the BEGIN fills the connection's pipeline or meets a full socket): the request then fails with
// UNSAFE_TRANSACTION (seen on heartbeats while bench:fleet grew a network), and the connection goes back
// to the pool inside the open transaction, where other requests' statements run uncommitted.
// `sql.reserve()` takes an idle connection only (or waits for one), so BEGIN, the statements and COMMIT
// go on it alone. No import of postgres.js here: Node's tests run it with the npm package.

/** A reserved connection of postgres.js, as far as a transaction needs it. */
export interface ReservedConnection {
  (strings: TemplateStringsArray): PromiseLike<unknown>;
  release(): void;
}

/** `fn` between BEGIN and COMMIT on a connection reserved from `pool`; rolled back when it throws. */
export async function onOwnConnection<C extends ReservedConnection, T>(pool: { reserve(): Promise<C> }, fn: (tx: C) => Promise<T>): Promise<T> {
  const c = await pool.reserve();
  let ended = false;
  try {
    await c`begin`;
    const out = await fn(c);
    // A COMMIT that fails has ended the transaction too.
    ended = true;
    await c`commit`;
    return out;
  } catch (e) {
    if (!ended) await Promise.resolve(c`rollback`).catch(() => {});
    throw e;
  } finally {
    c.release();
  }
}
