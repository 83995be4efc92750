import { closeSync, openSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import { CliError, str, type Action, type ActionContext, type Values } from '../args.ts';
import { connectForReading, reexecInSim, simDir, withoutSim } from '../bus-options.ts';
import { follow, readStored } from '../../bus/event-log-reader.ts';
import {
  entryJson,
  entryMatches,
  formatEntry,
  parseSince,
  decodeStored,
  toExportLine,
  typeMatcher,
  type EventFilter,
  type Since,
  type StreamKind,
} from '../../events/log.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { writeAllSync } from '../../lib/write-all.ts';

interface Plan {
  streams: StreamKind[];
  filter: EventFilter;
  since: Since;
  matchType: (t: string) => boolean;
}

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
  return { streams, filter: { relayId }, since, matchType };
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
  try {
    for await (const m of follow(nc, p.streams, p.filter, p.since, ac.signal)) {
      const e = decodeStored(m);
      if (!entryMatches(e, p.filter, p.matchType) || ac.signal.aborted) continue;
      process.stdout.write((json ? JSON.stringify(entryJson(e)) : formatEntry(e, { colour, ...(width ? { width } : {}) })) + '\n');
    }
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  } finally {
    process.stdout.off('error', onStdoutError);
  }
  return 0;
}

async function exportStream(nc: NatsConnection, p: Plan, out: string | undefined): Promise<number> {
  const fd = out ? openSync(out, 'w', 0o600) : 1;
  let n = 0;
  let skipped = 0;
  try {
    for await (const m of readStored(nc, p.streams, p.filter, p.since)) {
      const e = decodeStored(m);
      if (!entryMatches(e, p.filter, p.matchType)) continue;
      if (!e.ok) skipped++;
      writeAllSync(fd, toExportLine(m) + '\n');
      n++;
    }
  } catch (e) {
    throw new CliError((e as Error).message, 1);
  } finally {
    if (out) closeSync(fd);
  }
  process.stderr.write(`exported ${n} messages${skipped ? ` (${skipped} of them not valid events, kept as stored)` : ''}${out ? ` to ${out}` : ''}\n`);
  return 0;
}

/** Plan, then read: here from `--nats-url`, or with `--sim` this same command inside the sim. */
async function read(v: Values, ctx: ActionContext, defaultSince: Since, go: (nc: NatsConnection, p: Plan) => Promise<number>): Promise<number> {
  const p = plan(v, defaultSince);
  const sim = simDir(v);
  if (sim !== null) return reexecInSim(sim, 'events', withoutSim(ctx.argv).rest);
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
