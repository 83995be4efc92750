import { closeSync, openSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import { CliError, str, type Action, type ActionContext, type Values } from '../args.ts';
import { connectForReading, reexecInSim, simDir, simManifest, withoutSim } from '../bus-options.ts';
import { simVerifyArgs, verificationOf } from '../verify-options.ts';
import { follow, readAdmissions, readStored } from '../../bus/event-log-reader.ts';
import {
  entryJson,
  entryMatches,
  formatEntry,
  jsonForTerminal,
  parseSince,
  decodeStored,
  toExportLine,
  typeMatcher,
  type EventFilter,
  type LogEntry,
  type Since,
  type StoredMessage,
  type StreamKind,
  type Verification,
} from '../../events/log.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { escapeForTerminal } from '../../lib/terminal.ts';
import { writeAllSync } from '../../lib/write-all.ts';

interface Plan {
  streams: StreamKind[];
  filter: EventFilter;
  since: Since;
  matchType: (t: string) => boolean;
  /** Null with --no-verify. */
  verify: Verification | null;
}

const NO_VERIFY_WARNING = 'warning: --no-verify: signatures are not checked; forged messages are shown as genuine\n';

export interface Decoder {
  /** Decode (and verify) a message; a relay message without a known key makes it catch up first (at most once a second). */
  decode(m: StoredMessage): Promise<LogEntry>;
  /** Catch up on the admissions stored since the last look (at most once a second), then decode. */
  retry(m: StoredMessage): Promise<LogEntry>;
}

/**
 * A reader that verifies: the relays' identity keys from every stored RelayAdmitted, then a decoder
 * that, when a relay message fails for want of a key it may not have seen yet (a relay admitted while
 * we read), catches up on the admissions stored since and decodes it again.
 */
export async function verifyingDecoder(nc: NatsConnection, verify: Verification | null): Promise<Decoder> {
  if (!verify) return { decode: async (m) => decodeStored(m), retry: async (m) => decodeStored(m) };
  let next = 1;
  let running: Promise<void> | null = null;
  let last = 0;
  const catchUp = async () => {
    // At most one catch-up a second: a flood of forged messages must not turn into a flood of consumers.
    if (running) return running;
    if (Date.now() - last < 1_000) return;
    running = (async () => {
      for await (const a of readAdmissions(nc, next)) {
        decodeStored(a, { verify });
        next = a.seq + 1;
      }
    })().finally(() => {
      last = Date.now();
      running = null;
    });
    return running;
  };
  await catchUp();
  const retry = async (m: StoredMessage) => {
    await catchUp();
    return decodeStored(m, { verify });
  };
  return {
    decode: async (m) => {
      const e = decodeStored(m, { verify });
      if (e.ok || m.stream !== 'relay' || (e.skipped.reason !== 'unknown-key' && e.skipped.reason !== 'bad-signature')) return e;
      return retry(m);
    },
    retry,
  };
}

/** How long `tail` holds a live relay message whose relay's admission (its key) has not arrived yet. */
const HOLD_UNKNOWN_KEY_MS = 5_000;
const MAX_HELD = 1_000;

function plan(v: Values, defaultSince: Since): Plan {
  const relayId = str(v.relay);
  if (relayId !== undefined && !RelayIdSchema.safeParse(relayId).success) throw new CliError(`--relay ${relayId}: not a relay id (a-z, 0-9 and -)`, 2);
  const stream = str(v.stream) ?? 'all';
  if (!['relay', 'topology', 'all'].includes(stream)) throw new CliError(`--stream must be relay, topology or all (got ${stream})`, 2);
  const streams: StreamKind[] = stream === 'all' ? ['topology', 'relay'] : [stream as StreamKind];
  let since = defaultSince;
  let matchType: (t: string) => boolean;
  try {
    if (typeof v.since === 'string') since = parseSince(v.since, new Date());
    matchType = typeMatcher(typeof v.type === 'string' ? [v.type] : []);
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  if (since.kind === 'seq' && streams.length > 1) throw new CliError('--since SEQ names a position in one stream: add --stream relay or --stream topology', 2);
  return { streams, filter: { relayId }, since, matchType, verify: null };
}

async function tailStream(nc: NatsConnection, p: Plan, json: boolean): Promise<number> {
  const ac = new AbortController();
  const stop = () => ac.abort();
  // Kept for the life of the process: a second signal (terminal and parent both sending one) is harmless.
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  // A reader that goes away (`| head`) ends the tail like Ctrl-C does.
  const onStdoutError = (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') stop();
    else throw e;
  };
  process.stdout.on('error', onStdoutError);
  const colour = !json && process.stdout.isTTY === true && !process.env.NO_COLOR;
  const width = process.stdout.isTTY ? Math.max(80, process.stdout.columns ?? 160) : undefined;
  let timer: ReturnType<typeof setInterval> | undefined;
  try {
    const reader = await verifyingDecoder(nc, p.verify);
    const print = (e: LogEntry) => {
      if (!entryMatches(e, p.filter, p.matchType)) return;
      process.stdout.write((json ? jsonForTerminal(entryJson(e)) : formatEntry(e, { colour, ...(width ? { width } : {}) })) + '\n');
    };
    // A relay publishes its first events as it is admitted: they may be stored before its RelayAdmitted.
    // Such a message is held (up to 5 s) until the admission that announces its key, then shown.
    const held: { m: StoredMessage; until: number }[] = [];
    const release = async (all: boolean) => {
      if (held.length === 0) return;
      for (const h of held.splice(0)) {
        const e = await reader.retry(h.m);
        if (!all && !e.ok && e.skipped.reason === 'unknown-key' && Date.now() < h.until) held.push(h);
        else print(e);
      }
    };
    let releasing = Promise.resolve();
    timer = setInterval(() => {
      releasing = releasing.then(() => release(false)).catch(() => {});
    }, 500);
    for await (const m of follow(nc, p.streams, p.filter, p.since, ac.signal)) {
      const e = await reader.decode(m);
      if (ac.signal.aborted) continue;
      if (!e.ok && e.skipped.reason === 'unknown-key' && held.length < MAX_HELD) held.push({ m, until: Date.now() + HOLD_UNKNOWN_KEY_MS });
      else print(e);
    }
    clearInterval(timer);
    await releasing;
    await release(true);
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  } finally {
    clearInterval(timer);
    process.stdout.off('error', onStdoutError);
  }
  return 0;
}

async function exportStream(nc: NatsConnection, p: Plan, out: string | undefined): Promise<number> {
  const fd = out ? openSync(out, 'w', 0o600) : 1;
  let n = 0;
  let skipped = 0;
  try {
    const reader = await verifyingDecoder(nc, p.verify);
    for await (const m of readStored(nc, p.streams, p.filter, p.since)) {
      const e = await reader.decode(m);
      if (!entryMatches(e, p.filter, p.matchType)) continue;
      if (!e.ok) {
        skipped++;
        // Kept as stored (the evidence) but marked; every reader of the file verifies again and never trusts the mark.
        process.stderr.write(
          `rejected ${m.stream === 'relay' ? 'R' : 'T'}#${m.seq} ${e.skipped.reason} ${escapeForTerminal(m.subject)}: ${escapeForTerminal(e.skipped.detail)}\n`,
        );
      }
      writeAllSync(fd, toExportLine(m, e.ok ? undefined : e.skipped) + '\n');
      n++;
    }
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  } finally {
    if (out) closeSync(fd);
  }
  const what = p.verify ? 'rejected (unsigned, forged or not valid events), kept as stored and marked' : 'not valid events, kept as stored';
  process.stderr.write(`exported ${n} messages${skipped ? ` (${skipped} of them ${what})` : ''}${out ? ` to ${escapeForTerminal(out)}` : ''}\n`);
  return 0;
}

/** Plan, then read: here from `--nats-url`, or with `--sim` this same command inside the sim. */
async function read(v: Values, ctx: ActionContext, defaultSince: Since, go: (nc: NatsConnection, p: Plan) => Promise<number>): Promise<number> {
  const p = plan(v, defaultSince);
  const sim = simDir(v);
  if (sim !== null) {
    const rest = withoutSim(ctx.argv).rest;
    return reexecInSim(sim, 'events', [...rest, ...simVerifyArgs(v, rest, simManifest(sim).controlPlane.topologyPublicKey)]);
  }
  p.verify = verificationOf(v);
  if (!p.verify) process.stderr.write(NO_VERIFY_WARNING);
  const nc = await connectForReading(v, 'relay-core events');
  try {
    return await go(nc, p);
  } finally {
    await nc.close().catch(() => {});
  }
}

/** `relay-core events tail`: events as they are stored, until Ctrl-C. */
export const tail: Action = (v, ctx) => read(v, ctx, { kind: 'new' }, (nc, p) => tailStream(nc, p, v.json === true));

/** `relay-core events export`: what is stored now, as export lines. */
export const exportLog: Action = (v, ctx) => read(v, ctx, { kind: 'all' }, (nc, p) => exportStream(nc, p, str(v.out)));
