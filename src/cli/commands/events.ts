import { closeSync, openSync, writeSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import { CliError, str, type Command } from '../args.ts';
import { connectForReading, reexecInSim, withoutSim } from '../bus-options.ts';
import { follow, readStored } from '../../bus/event-log-reader.ts';
import { entryJson, entryMatches, formatEntry, parseSince, decodeStored, toExportLine, typeMatcher, type EventFilter, type Since, type StreamKind } from '../../events/log.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';

const usage = `Usage: relay-core events tail [--relay ID] [--type PATTERN[,PATTERN]] [--since SEQ|TIME|DURATION|all] [--stream S] [--json] [bus]
       relay-core events export [--relay ID] [--type PATTERN] [--since ...] [--stream S] [--out FILE] [bus]
  bus: --nats-url URL[,URL] [--nats-token TOKEN]   or   --sim [DIR] (a running 'relay-core sim', default ./.state/sim)

The event streams of a relay network, as any NATS client can read them (subjects and schemas:
docs/events.md, docs/schemas/). Nothing is left on the server: each reader is an ordered, ephemeral
consumer.

  tail     Print events as they are stored, one line each (coloured on a terminal; NO_COLOR turns it
           off), or with --json one JSON object per line: {stream, seq, subject, time, event} or, for a
           message that is not a valid event of its subject, {stream, seq, subject, time, skipped:
           {reason, detail}}. Runs until Ctrl-C (exit 0). Without --since only new events are shown.
  export   Write what is stored now (from --since, default all) as JSON lines with the message bytes
           kept as stored, corrupt ones included, to be read elsewhere or later. Ends when it has
           caught up; prints the count to stderr. 'relay-core replay --file' reads such a file: it
           needs the whole topology stream, so export without --relay and --type for it.

Options:
  --relay ID          only this relay's own events and the topology events addressed to it
  --type PATTERN      event types, * and ? as wildcards, comma-separated (Link*,Kernel*)
  --since X           a stream sequence (with one --stream), a duration back (90s, 15m, 2h, 7d),
                      an ISO time, or 'all'
  --stream S          relay, topology or all (default all)
  --json              (tail) JSON lines instead of text
  --out FILE          (export) write here, mode 0600, instead of stdout
  --nats-url URL      NATS servers                                    RELAYNET_NATS_SERVERS
  --nats-token TOKEN  NATS token                                      RELAYNET_NATS_TOKEN
  --sim [DIR]         read a running sim's NATS: runs this command again inside the sim's network
                      namespace (needs root)
  -h, --help          show this help`;

interface Plan {
  streams: StreamKind[];
  filter: EventFilter;
  since: Since;
  matchType: (t: string) => boolean;
}

function plan(v: Record<string, unknown>, defaultSince: Since): Plan {
  const relayId = str(v.relay, 'relay');
  if (relayId !== undefined && !RelayIdSchema.safeParse(relayId).success) throw new CliError(`--relay ${relayId}: not a relay id (a-z, 0-9 and -)`, 2);
  const stream = str(v.stream, 'stream') ?? 'all';
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

async function tail(nc: NatsConnection, p: Plan, json: boolean): Promise<number> {
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

async function exportLog(nc: NatsConnection, p: Plan, out: string | undefined): Promise<number> {
  const fd = out ? openSync(out, 'w', 0o600) : 1;
  let n = 0;
  let skipped = 0;
  try {
    for await (const m of readStored(nc, p.streams, p.filter, p.since)) {
      const e = decodeStored(m);
      if (!entryMatches(e, p.filter, p.matchType)) continue;
      if (!e.ok) skipped++;
      writeSync(fd, toExportLine(m) + '\n');
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

export const command: Command = {
  name: 'events',
  summary: 'tail and export the event streams',
  usage,
  options: {
    relay: { type: 'string' },
    type: { type: 'string' },
    since: { type: 'string' },
    stream: { type: 'string' },
    json: { type: 'boolean' },
    out: { type: 'string' },
    'nats-url': { type: 'string' },
    'nats-token': { type: 'string' },
    sim: { type: 'boolean' },
  },
  async run(v, pos) {
    const sub = pos[0];
    if (sub !== 'tail' && sub !== 'export') throw new CliError(`unknown or missing subcommand '${sub ?? ''}'\n\n${usage}`, 2);
    if (pos.length > 1 && !v.sim) throw new CliError(`unexpected argument '${pos[1]}'\n\n${usage}`, 2);
    const p = plan(v, sub === 'tail' ? { kind: 'new' } : { kind: 'all' });
    if (v.sim) {
      const { dir, rest } = withoutSim(process.argv.slice(3));
      return reexecInSim(dir ?? '.state/sim', 'events', rest);
    }
    const nc = await connectForReading(v, 'relay-core events');
    try {
      return sub === 'tail' ? await tail(nc, p, v.json === true) : await exportLog(nc, p, str(v.out, 'out'));
    } finally {
      await nc.close().catch(() => {});
    }
  },
};
