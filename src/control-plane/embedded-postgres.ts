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
const dec = new TextDecoder();
/** NotificationResponse ('A'), Query ('Q'), Parse ('P'). */
const NOTIFICATION = 0x41;
const QUERY = 0x51;
const PARSE = 0x50;
/** What the multiplexer sends PGlite for an UNLISTEN while other connections still listen: a no-op with the same reply. */
const NO_CHANNEL = 'relay_core_mux_no_channel';

/** A LISTEN or UNLISTEN statement's channel (unquoted names fold to lower case; '*': all), else null. */
export function listenStatement(text: string): { op: 'listen' | 'unlisten'; channel: string } | null {
  const m = /^\s*(listen|unlisten)\s+(?:"((?:[^"]|"")+)"|([A-Za-z_][\w$]*)|(\*))\s*;?\s*$/i.exec(text);
  if (!m) return null;
  const op = m[1]!.toLowerCase() as 'listen' | 'unlisten';
  const channel = m[2] !== undefined ? m[2].replaceAll('""', '"') : m[3] !== undefined ? m[3].toLowerCase() : '*';
  if (op === 'listen' && channel === '*') return null;
  return { op, channel };
}

/** The SQL text of a Query or Parse message (null for any other message). */
function statementText(m: Uint8Array): string | null {
  if (m[0] === QUERY) return dec.decode(m.subarray(5, m.indexOf(0, 5)));
  if (m[0] !== PARSE) return null;
  const q = m.indexOf(0, 5) + 1;
  return dec.decode(m.subarray(q, m.indexOf(0, q)));
}

/** `m` (a Query or Parse message) with its SQL text replaced. */
function withStatement(m: Uint8Array, text: string): Uint8Array {
  if (m[0] === QUERY) return simpleQuery(text);
  const nameEnd = m.indexOf(0, 5) + 1;
  const queryEnd = m.indexOf(0, nameEnd) + 1;
  return frame(PARSE, Buffer.concat([m.subarray(5, nameEnd), enc.encode(`${text}\0`), m.subarray(queryEnd)]));
}

/** The channel a NotificationResponse names. */
function notificationChannel(m: Uint8Array): string {
  return dec.decode(m.subarray(9, m.indexOf(0, 9)));
}

/**
 * Splits a backend's output into messages as it streams, taking out NotificationResponses: the rest goes
 * on to the connection whose work it answers, each notification to `notified`.
 */
class OutputSplitter {
  #partial: Uint8Array | null = null;
  readonly #pass: (d: Uint8Array) => void;
  readonly #notified: (m: Uint8Array) => void;
  constructor(pass: (d: Uint8Array) => void, notified: (m: Uint8Array) => void) {
    this.#pass = pass;
    this.#notified = notified;
  }

  push(chunk: Uint8Array): void {
    const d = this.#partial ? Buffer.concat([this.#partial, chunk]) : chunk;
    this.#partial = null;
    const view = new DataView(d.buffer, d.byteOffset, d.byteLength);
    let from = 0;
    let i = 0;
    while (i + 5 <= d.length) {
      const end = i + 1 + view.getInt32(i + 1);
      if (end > d.length) break;
      if (d[i] === NOTIFICATION) {
        if (i > from) this.#pass(d.subarray(from, i));
        this.#notified(d.slice(i, end));
        from = end;
      }
      i = end;
    }
    if (i > from) this.#pass(d.subarray(from, i));
    if (i < d.length) this.#partial = d.slice(i);
  }
}

/** A frontend message: its type byte, its length, its body. */
function frame(type: number, body: Uint8Array): Uint8Array {
  const m = new Uint8Array(5 + body.length);
  m[0] = type;
  new DataView(m.buffer).setInt32(1, 4 + body.length);
  m.set(body, 5);
  return m;
}

function simpleQuery(text: string): Uint8Array {
  return frame(QUERY, enc.encode(text + '\0'));
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
 *
 * LISTEN is the one piece of session state kept per connection: the shared session listens, every
 * notification is taken out of the output it arrives in (PGlite sends it before the ReadyForQuery of the
 * notifying command, or of its COMMIT) and handed to the connections that listen on its channel, after
 * the unit of work in flight, so it never lands inside another reply. An UNLISTEN leaves the session
 * listening while other connections still do.
 */
export class SessionScheduler {
  readonly #db: PGlite;
  #queue: Item[] = [];
  #owner: number | null = null;
  #pumping: Promise<void> | null = null;
  readonly #abandoned = new Set<number>();
  /** Where each connection's output goes (any of its items' `onData`: they all write to its socket). */
  readonly #sinks = new Map<number, (data: Uint8Array) => void>();
  /** Connections listening, by channel. */
  readonly #listeners = new Map<string, Set<number>>();
  /** Notifications taken out of the output of the item running, delivered once it is done. */
  #notifications: Uint8Array[] = [];

  constructor(db: PGlite) {
    this.#db = db;
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    if (this.#abandoned.has(handlerId)) return Promise.reject(new Error('connection closed'));
    this.#sinks.set(handlerId, onData);
    return new Promise<number>((resolve, reject) => {
      this.#queue.push({ handlerId, message, onData, resolve, reject });
      this.#kick();
    });
  }

  getQueueLength(): number {
    return this.#queue.length;
  }

  clearQueueForHandler(handlerId: number): void {
    this.#sinks.delete(handlerId);
    for (const [channel, ids] of this.#listeners) if (ids.delete(handlerId) && !ids.size) this.#listeners.delete(channel);
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
      const out = new OutputSplitter(
        (d) => {
          bytes += d.length;
          item.onData(d);
        },
        (m) => this.#notifications.push(m),
      );
      try {
        const message = this.#listening(item.handlerId, item.message);
        await this.#db.runExclusive(() => this.#db.execProtocolRawStream(message, { onRawData: (d) => out.push(d) }));
        item.resolve(bytes);
      } catch (e) {
        item.reject(e);
      }
      this.#deliver();
      // Startup (no type byte), Query, Sync and PasswordMessage end a unit of work.
      const endsUnit = type === 0 || type === 0x51 || type === 0x53 || type === 0x70;
      if (endsUnit && !this.#db.isInTransaction()) this.#owner = null;
    }
  }

  /**
   * Follows the connection's LISTEN and UNLISTEN statements; the message to run for `m`: itself, or for an
   * UNLISTEN of a channel other connections still listen on, one that changes nothing.
   */
  #listening(handlerId: number, m: Uint8Array): Uint8Array {
    const text = statementText(m);
    const st = text === null ? null : listenStatement(text);
    if (!st) return m;
    if (st.op === 'listen') {
      const ids = this.#listeners.get(st.channel) ?? new Set<number>();
      this.#listeners.set(st.channel, ids.add(handlerId));
      return m;
    }
    const channels = st.channel === '*' ? [...this.#listeners.keys()] : [st.channel];
    for (const c of channels) {
      const ids = this.#listeners.get(c);
      if (ids?.delete(handlerId) && !ids.size) this.#listeners.delete(c);
    }
    // The session stays listening on a channel any connection still listens on.
    return st.channel !== '*' && !this.#listeners.has(st.channel) ? m : withStatement(m, `UNLISTEN ${NO_CHANNEL}`);
  }

  /** Hands the notifications of the unit just run to the connections listening on their channels. */
  #deliver(): void {
    if (!this.#notifications.length) return;
    const ns = this.#notifications;
    this.#notifications = [];
    for (const n of ns) {
      for (const id of this.#listeners.get(notificationChannel(n)) ?? []) {
        if (this.#abandoned.has(id)) continue;
        try {
          this.#sinks.get(id)?.(n);
        } catch {
          // A connection going away: its handler drops it.
        }
      }
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
