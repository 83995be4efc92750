import { closeSync, createReadStream, existsSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { NatsConnection } from '@nats-io/transport-node';
import { CliError, str, type Action } from '../args.ts';
import { connectForReading, reexecInSim, simDir, simManifest, withoutSim } from '../bus-options.ts';
import { readStored } from '../../bus/event-log-reader.ts';
import { RelayIdSchema } from '../../contract/envelope.ts';
import { decodeStored, fromExportLine, toExportLine, type LogEntry, type StoredMessage, type Verification } from '../../events/log.ts';
import { SourceOrder } from '../../events/source-order.ts';
import { escapeForTerminal, jsonForTerminal } from '../../lib/terminal.ts';
import { simVerifyArgs, verificationOf } from '../verify-options.ts';
import { clientScope } from '../../kernel/clients.ts';
import { emptyHostState, type HostState } from '../../kernel/host-state.ts';
import { LinuxKernelBackend } from '../../kernel/linux-backend.ts';
import { meshScope } from '../../kernel/mesh.ts';
import { canonicalHostState } from '../../kernel/host-text.ts';
import { rootLogger } from '../../lib/logger.ts';
import { diffHosts, formatDiff, formatReplay, formatRounds } from '../../replay/render.ts';
import { RelayReplay, withinCut, type ReplayCut, type ReplayResult } from '../../replay/replay.ts';
import { formatTimeline, TimelineBuilder } from '../../replay/timeline.ts';

export function parseCut(s: string | undefined): ReplayCut | null {
  if (s === undefined) return null;
  if (/^\d+$/.test(s)) return { kind: 'seq', seq: Number(s) };
  const t = Date.parse(s);
  if (/^\d{4}-\d{2}-\d{2}/.test(s) && !Number.isNaN(t)) return { kind: 'time', time: new Date(t) };
  throw new CliError(`--to ${s}: give a relay-stream sequence (1200) or an ISO time (2026-11-25T10:00:00Z)`, 2);
}

/** What reading a relay's log found: how many of its events lay after their successors (`SourceOrder`). */
export interface Reading {
  reordered: number;
}

export interface Sink {
  topology(e: LogEntry): void;
  relay(e: LogEntry): void;
}

/**
 * Feed a replay from an export file: topology lines first (a second pass), then the relay's, in the order
 * the relay published them (`SourceOrder`).
 * Every line is verified again (`verify`; null: `--no-verify`); a `rejected` mark in the file is ignored.
 */
export async function fromFile(file: string, relayId: string, cut: ReplayCut | null, sink: Sink, verify: Verification | null = null): Promise<Reading> {
  const decode = (m: StoredMessage) => (verify ? decodeStored(m, { verify }) : decodeStored(m));
  if (!existsSync(file)) throw new CliError(`--file ${file}: no such file`, 2);
  const prefix = `relaynet.relay.${relayId}.`;
  const order = new SourceOrder();
  for (const pass of ['topology', 'relay'] as const) {
    const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    let line = 0;
    let lastSeq = 0;
    for await (const text of rl) {
      line++;
      if (!text.trim()) continue;
      const m = fromExportLine(text);
      if (!m.ok) {
        if (pass === 'relay') process.stderr.write(`${escapeForTerminal(file)}:${line}: not an export line, skipped: ${escapeForTerminal(m.error)}\n`);
        continue;
      }
      if (m.message.stream !== pass) continue;
      if (pass === 'topology') {
        sink.topology(decode(m.message));
        continue;
      }
      if (!m.message.subject.startsWith(prefix)) continue;
      if (m.message.seq <= lastSeq)
        throw new CliError(`${file}:${line}: relay-stream sequence ${m.message.seq} after ${lastSeq}: the file is not in stream order`, 1);
      lastSeq = m.message.seq;
      if (!withinCut(m.message, cut)) break;
      for (const e of order.push(decode(m.message))) sink.relay(e);
    }
    rl.close();
  }
  for (const e of order.flush()) sink.relay(e);
  return { reordered: order.reordered };
}

export async function fromNats(
  nc: NatsConnection,
  relayId: string,
  cut: ReplayCut | null,
  sink: Sink,
  save: string | undefined,
  verify: Verification | null,
): Promise<Reading> {
  const decode = (m: StoredMessage) => (verify ? decodeStored(m, { verify }) : decodeStored(m));
  const fd = save ? openSync(save, 'w', 0o600) : null;
  const keep = (m: StoredMessage) => {
    if (fd !== null) writeSync(fd, toExportLine(m) + '\n');
  };
  try {
    for await (const m of readStored(nc, ['topology'], {}, { kind: 'all' })) {
      keep(m);
      sink.topology(decode(m));
    }
    const order = new SourceOrder();
    for await (const m of readStored(nc, ['relay'], { relayId }, { kind: 'all' }, cut?.kind === 'seq' ? cut.seq : undefined)) {
      if (!withinCut(m, cut)) break;
      keep(m);
      for (const e of order.push(decode(m))) sink.relay(e);
    }
    for (const e of order.flush()) sink.relay(e);
    return { reordered: order.reordered };
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError((e as Error).message, 1);
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/** The relay's owned host as it is now (both owners' scopes), read with the Linux backend. */
async function liveHost(r: ReplayResult, netns: string | undefined): Promise<HostState> {
  const self = r.topology.relays.find((x) => x.id === r.relayId);
  const c = r.relay.config;
  if (!c) throw new CliError('--diff: the log has no configuration of this relay (RelayStarted before v3): its host cannot be scoped', 1);
  if (!self) throw new CliError(`--diff: ${r.relayId} is not in the replayed view (${r.topology.viewNote ?? 'not admitted'}): its host cannot be scoped`, 1);
  const backend = new LinuxKernelBackend({
    logger: rootLogger({ component: 'replay' }, process.env.RELAYNET_LOG_LEVEL ?? 'warn'),
    ...(netns ? { netns } : {}),
  });
  const parts = await Promise.all([
    backend.read(meshScope(c.wgPrefix, self)),
    backend.read(clientScope(self, { ...c, clientPrefix6: c.clientPrefix6 ?? null })),
  ]);
  const h = emptyHostState();
  for (const p of parts) {
    for (const [name, d] of p.devices) h.devices.set(name, d);
    h.routes.push(...p.routes);
    h.rules.push(...p.rules);
    Object.assign(h.sysctls, p.sysctls);
    Object.assign(h.nftTables, p.nftTables);
    h.portMaps.push(...p.portMaps);
  }
  return canonicalHostState(h);
}

/** `relay-core replay`: a relay's actors and host rebuilt from its log; its timeline; its drift. */
export const replay: Action = async (v, ctx) => {
  const relayId = str(v.relay);
  if (!relayId) throw new CliError('missing --relay ID', 2);
  if (!RelayIdSchema.safeParse(relayId).success) throw new CliError(`--relay ${relayId}: not a relay id (a-z, 0-9 and -)`, 2);
  const cut = parseCut(str(v.to));
  const link = str(v.link);
  const session = str(v.session);
  if ((link || session) && !v.timeline) throw new CliError('--link and --session select what --timeline shows: add --timeline', 2);
  if (link && session) throw new CliError('give --link or --session, not both', 2);
  if (v.timeline && v.diff) throw new CliError('--timeline and --diff are separate views: give one', 2);
  const file = str(v.file);
  const sim = simDir(v);
  if (file && (sim !== null || ctx.flags.has('natsUrl') || v.save)) throw new CliError('--file reads a saved log: it takes no --sim, --nats-url or --save', 2);

  if (sim !== null) {
    const m = simManifest(sim);
    const extra: string[] = [];
    if (v.diff && !v.netns) {
      const relay = m.relays.find((r) => r.id === relayId);
      if (!relay) throw new CliError(`--diff: the sim has no relay ${relayId}`, 1);
      extra.push('--netns', relay.namespace);
    }
    const rest = withoutSim(ctx.argv).rest;
    return reexecInSim(sim, 'replay', [...rest, ...extra, ...simVerifyArgs(v, rest, m.controlPlane.topologyPublicKey)]);
  }

  const verify = verificationOf(v);
  if (!verify) process.stderr.write('warning: --no-verify: signatures are not checked; forged messages replay as genuine\n');

  const replay = v.timeline ? null : new RelayReplay({ relayId, keepDerivedOps: v.rounds === true });
  const timeline = v.timeline ? new TimelineBuilder({ relayId, ...(link ? { link } : {}), ...(session ? { session } : {}) }) : null;
  const sink: Sink = {
    topology: (e) => replay?.addTopology(e),
    relay: (e) => (replay ? replay.add(e) : timeline!.add(e)),
  };
  let reading: Reading;
  if (file) reading = await fromFile(file, relayId, cut, sink, verify);
  else {
    const nc = await connectForReading(v, 'relay-core replay');
    try {
      reading = await fromNats(nc, relayId, cut, sink, str(v.save), verify);
    } finally {
      await nc.close().catch(() => {});
    }
  }
  if (reading.reordered)
    process.stderr.write(
      `note: ${reading.reordered} of ${relayId}'s events lay in the stream after some of their successors (a publish sent again): read in the order the relay published them\n`,
    );

  if (timeline) {
    const items = timeline.result();
    process.stdout.write(v.json ? items.map((i) => jsonForTerminal(i) + '\n').join('') : formatTimeline(items));
    return 0;
  }
  const r = replay!.result();
  if (r.events.relay === 0) process.stderr.write(`warning: the log holds no valid event of ${relayId}\n`);
  if (v.diff) {
    const live = await liveHost(r, str(v.netns));
    const d = diffHosts(r.host, live);
    process.stdout.write(v.json ? jsonForTerminal({ relayId, upTo: r.upTo, ...d }) + '\n' : formatDiff(d));
    return d.missing.length || d.unexpected.length ? 1 : 0;
  }
  process.stdout.write(v.json ? jsonForTerminal(r) + '\n' : formatReplay(r) + (r.rounds ? formatRounds(r.rounds) : ''));
  return 0;
};
