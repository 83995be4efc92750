import { mkdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketHandler } from '@electric-sql/pglite-socket';

/** PGlite (Postgres compiled to WebAssembly) served over the Postgres wire protocol on loopback. */
export interface EmbeddedPostgres {
  url: string;
  port: number;
  /** Connections open right now. */
  connections(): number;
  stop(): Promise<void>;
}

type QueryQueue = ConstructorParameters<typeof PGLiteSocketHandler>[0]['queryQueue'];

interface Item {
  handlerId: number;
  message: Uint8Array;
  onData: (data: Uint8Array) => void;
  resolve: (bytes: number) => void;
  reject: (e: unknown) => void;
}

const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]);
const enc = new TextEncoder();

function simpleQuery(text: string): Uint8Array {
  const body = enc.encode(text + '\0');
  const m = new Uint8Array(5 + body.length);
  m[0] = 0x51;
  new DataView(m.buffer).setInt32(1, 4 + body.length);
  m.set(body, 5);
  return m;
}

/**
 * Multiplexes many client connections onto PGlite's single backend session, keeping each client's
 * protocol exchange whole. A connection owns the session from its first message until the end of
 * its unit of work (a simple Query, a Sync that closes an extended-protocol batch, the startup or
 * password message) AND the session is outside a transaction; meanwhile other connections wait.
 *
 * pglite-socket's own queue hands the session over after every single message, so the
 * Parse/Bind/Execute of two concurrent clients interleave ("bind message supplies 2 parameters, but
 * prepared statement "" requires 0"); this replaces it through PGLiteSocketHandler's `queryQueue`
 * option. Session state (SET, named prepared statements, temp tables) is shared by all clients:
 * connect with `prepare: false` and keep no session state.
 */
export class SessionScheduler {
  readonly #db: PGlite;
  #queue: Item[] = [];
  #owner: number | null = null;
  #pumping: Promise<void> | null = null;
  readonly #abandoned = new Set<number>();

  constructor(db: PGlite) {
    this.#db = db;
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    if (this.#abandoned.has(handlerId)) return Promise.reject(new Error('connection closed'));
    return new Promise<number>((resolve, reject) => {
      this.#queue.push({ handlerId, message, onData, resolve, reject });
      this.#kick();
    });
  }

  getQueueLength(): number {
    return this.#queue.length;
  }

  clearQueueForHandler(handlerId: number): void {
    this.#queue = this.#queue.filter((i) => {
      if (i.handlerId !== handlerId) return true;
      i.reject(new Error('connection closed'));
      return false;
    });
  }

  /** The connection went away: if it held the session, end its unit and roll back its transaction. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    if (this.#owner !== handlerId) return;
    this.#abandoned.add(handlerId);
    this.#kick();
    await this.#pumping;
  }

  /** Resolves when nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  #kick(): void {
    this.#pumping ??= this.#pump().finally(() => {
      this.#pumping = null;
      if (this.#queue.length && this.#next() >= 0) this.#kick();
    });
  }

  #next(): number {
    if (this.#owner === null) return this.#queue.length ? 0 : -1;
    return this.#queue.findIndex((i) => i.handlerId === this.#owner);
  }

  async #pump(): Promise<void> {
    for (;;) {
      if (this.#owner !== null && this.#abandoned.has(this.#owner)) {
        await this.#reset();
        this.#abandoned.delete(this.#owner);
        this.#owner = null;
      }
      const idx = this.#next();
      if (idx < 0) return;
      const item = this.#queue.splice(idx, 1)[0]!;
      const type = item.message[0]!;
      if (type === 0x58) {
        // Terminate: the client is leaving; never forward it to the shared backend.
        item.resolve(0);
        continue;
      }
      this.#owner = item.handlerId;
      let bytes = 0;
      try {
        await this.#db.runExclusive(() =>
          this.#db.execProtocolRawStream(item.message, {
            onRawData: (d) => {
              bytes += d.length;
              item.onData(d);
            },
          }),
        );
        item.resolve(bytes);
      } catch (e) {
        item.reject(e);
      }
      // Startup (no type byte), Query, Sync and PasswordMessage end a unit of work.
      const endsUnit = type === 0 || type === 0x51 || type === 0x53 || type === 0x70;
      if (endsUnit && !this.#db.isInTransaction()) this.#owner = null;
    }
  }

  async #reset(): Promise<void> {
    const sink = () => {};
    try {
      await this.#db.runExclusive(async () => {
        await this.#db.execProtocolRawStream(SYNC, { onRawData: sink });
        if (this.#db.isInTransaction()) await this.#db.execProtocolRawStream(simpleQuery('ROLLBACK'), { onRawData: sink });
      });
    } catch {
      // The session is reset as far as it can be; the next client sees any error itself.
    }
  }
}

function tooManyConnections(): Buffer {
  const fields = Buffer.from('SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0', 'latin1');
  const head = Buffer.alloc(5);
  head[0] = 0x45;
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}

/**
 * Start PGlite with its data in `dataDir` ('memory://' for a throwaway database) and serve it on
 * 127.0.0.1:`port` (0 = a free port) to at most `maxConnections` clients at once.
 */
export async function startEmbeddedPostgres(opts: { dataDir: string; port?: number; maxConnections?: number }): Promise<EmbeddedPostgres> {
  if (!opts.dataDir.startsWith('memory://')) mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  let db: PGlite;
  try {
    db = await PGlite.create(opts.dataDir);
  } catch (e) {
    throw new Error(`cannot open the embedded database in ${opts.dataDir}: ${(e as Error).message}`);
  }
  const scheduler = new SessionScheduler(db);
  const max = opts.maxConnections ?? 50;
  const handlers = new Set<PGLiteSocketHandler>();
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (handlers.size >= max) {
      socket.end(tooManyConnections());
      setTimeout(() => socket.destroy(), 1_000).unref();
      return;
    }
    const h = new PGLiteSocketHandler({ queryQueue: scheduler as unknown as QueryQueue, closeOnDetach: true });
    handlers.add(h);
    const drop = () => handlers.delete(h);
    h.addEventListener('close', drop);
    h.addEventListener('error', drop);
    h.attach(socket).catch(() => {
      drop();
      socket.destroy();
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(e.code === 'EADDRINUSE' ? `port ${opts.port} for the embedded database is already in use` : e.message)),
      );
      server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
    });
  } catch (e) {
    await db.close().catch(() => {});
    throw e;
  }
  const port = (server.address() as AddressInfo).port;
  let stopped: Promise<void> | null = null;
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    connections: () => handlers.size,
    stop() {
      stopped ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await Promise.all([...handlers].map((h) => h.detach(true).catch(() => {})));
        handlers.clear();
        for (const s of sockets) s.destroy();
        await closed;
        await scheduler.idle();
        await db.close();
      })();
      return stopped;
    },
  };
}
