import type { HostState } from '../kernel/host-state.ts';
import { describeOp } from '../kernel/execute.ts';
import { renderHostState } from '../kernel/host-text.ts';
import { table } from '../lib/table.ts';
import { escapeForTerminal } from '../lib/terminal.ts';
import type { ReplayResult, RoundCheck } from './replay.ts';

/** Rows of the relays, links and sessions tables: indented under their heading, one space apart. */
const ROWS = { gap: ' ', indent: '  ' };

/** Replay's result as text for a person: the relay, its view, every actor, the checks and the host. Pure. */
export function formatReplay(r: ReplayResult): string {
  const out: string[] = [];
  const short = (s: string | null) => (s ? `${s.slice(0, 12)}…` : '-');
  out.push(
    `relay ${r.relayId}${r.upTo ? ` as of relay-stream seq ${r.upTo.seq} (${r.upTo.time})` : ' (no events of this relay in the log)'}: ${r.relay.state}` +
      `, ${r.relay.runs} run${r.relay.runs === 1 ? '' : 's'}${r.relay.uncleanEnds ? ` (${r.relay.uncleanEnds} ended without RelayStopped)` : ''}` +
      `${r.relay.software ? `, ${r.relay.software}` : ''}`,
  );
  if (r.relay.eventsDropped || r.relay.keyRefusals) {
    out.push(`  ${r.relay.eventsDropped} relay events dropped while the bus was away (the log has holes), ${r.relay.keyRefusals} topology keys refused`);
  }
  out.push(`  mesh address ${r.relay.meshAddress ?? '-'}, client pool ${r.relay.clientPool ?? '-'}, public key ${r.relay.publicKey ?? '-'}`);
  out.push(`events: ${r.events.relay} of this relay, ${r.events.topology} topology, ${r.events.skipped} rejected`);
  for (const s of r.skipped) out.push(`  REJECTED ${s.stream} seq ${s.seq}: ${s.reason}: ${s.detail}`);
  if (r.events.skipped > r.skipped.length) out.push(`  ... and ${r.events.skipped - r.skipped.length} more`);
  const t = r.topology;
  out.push(
    `topology: revision ${t.revision < 0 ? '?' : t.revision} (${t.view}${t.digest ? `, digest ${short(t.digest)}` : ''}), ${t.relays.length} relays, ${t.sessions} open sessions;` +
      ` ${t.seeds} seeds, ${t.applied} events applied, ${t.resyncsRequested} resyncs requested` +
      `${
        Object.keys(t.rejected).length
          ? `, rejected ${Object.entries(t.rejected)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}`
          : ''
      }`,
  );
  if (t.duplicates) out.push(`  ${t.duplicates} verified duplicate(s) of a revision ignored (the first verified copy counts)`);
  if (t.viewNote) out.push(`  note: ${t.viewNote}`);
  if (t.digestMismatches) out.push(`  WARNING: ${t.digestMismatches} seed(s) recorded a different view than the topology stream gives`);
  out.push(
    ...table(
      [{ width: 16 }, { width: 15 }, { width: 22 }, {}],
      t.relays.map((rel) => [rel.id, rel.meshAddress, rel.endpoint, rel.region]),
      ROWS,
    ),
  );
  out.push(`links: ${r.links.length}`);
  out.push(
    ...table(
      [{ width: 16 }, { width: 10 }, { width: 12 }, {}],
      r.links.map((l) => [l.peerId, l.device, l.state, `${l.reason} (since ${l.since}, seq ${l.seq})`]),
      ROWS,
    ),
  );
  out.push(`client sessions: ${r.sessions.length}`);
  const sessionRows = r.sessions.map((s) => [
    s.address,
    s.sessionId,
    s.mode === 'private' ? `private ${s.role}` : 'standard',
    s.state,
    `exit ${s.exitId}${s.confirmedExitId && s.confirmedExitId !== s.exitId ? ` (confirmed ${s.confirmedExitId})` : ''}: ${s.reason} (since ${s.since}, seq ${s.seq})`,
  ]);
  out.push(...table([{ width: 15 }, { width: 0 }, { width: 13 }, { width: 11 }, {}], sessionRows, ROWS));
  const k = r.kernel;
  out.push(`kernel: ${k.rounds} rounds recorded, ${k.mutations} operations applied, ${k.failures} failed${k.lastError ? ` (last: ${k.lastError})` : ''}`);
  const c = r.checks;
  out.push(
    `checks: ${c.rounds} rounds re-planned from their causes: ${c.matched} match, ${c.mismatched} differ, ${c.unchecked} unchecked; ${c.inconsistent} recorded operations the replayed host refused` +
      (c.reachedChecked > 0 ? `; reached scopes: ${c.reachedChecked - c.reachedMismatched} of ${c.reachedChecked} as recorded` : ''),
  );
  for (const [why, n] of Object.entries(c.uncheckedWhy)) out.push(`  unchecked ${n}: ${why}`);
  for (const m of c.mismatches) {
    out.push(
      `  DIFFERS seq ${m.seq} (${m.owner}, cause ${m.cause ?? '-'})${m.reached === 'mismatch' ? ': the reached scope is not what the relay recorded' : ''}:`,
    );
    out.push(...(m.recorded.length ? m.recorded.map((o) => `    recorded ${describeOp(o)}`) : ['    recorded nothing']));
    out.push(...(m.derived?.length ? m.derived.map((o) => `    derived  ${describeOp(o)}`) : ['    derived  nothing']));
  }
  for (const i of c.inconsistencies) out.push(`  REFUSED seq ${i.seq}: ${describeOp(i.op)}: ${i.message}`);
  out.push('host (as the kernel actor programmed it, rendered by the in-memory kernel):');
  // Every line from stored data escaped; the host's rendering is the one multi-line block (nft bodies).
  const text = out.map(escapeForTerminal);
  const host = renderHostState(r.host);
  text.push(host ? host.trimEnd().replace(/^/gm, '  ').split('\n').map(escapeForTerminal).join('\n') : '  (nothing)');
  return text.join('\n') + '\n';
}

/** Every kernel round with its cause, verdict and operations (`replay --rounds`). */
export function formatRounds(rounds: readonly RoundCheck[]): string {
  const out = ['rounds:'];
  for (const r of rounds) {
    out.push(
      `  seq ${r.seq} ${r.owner} cause ${r.cause ?? '-'}: ${r.verdict}${r.why ? ` (${r.why})` : ''}${r.reached === 'mismatch' ? ' (reached scope differs)' : ''}`,
    );
    for (const o of r.recorded) out.push(`    ${describeOp(o)}`);
    if (r.verdict === 'mismatch') for (const o of r.derived ?? []) out.push(`    derived ${describeOp(o)}`);
  }
  return out.map(escapeForTerminal).join('\n') + '\n';
}

export interface HostDiff {
  /** Lines of the replayed host that the live host does not have. */
  missing: string[];
  /** Lines of the live host that replay does not have. */
  unexpected: string[];
}

/**
 * The drift between the host replay says the relay programmed and the host as it is: both rendered
 * one fact per line (a device, an address, a peer, a route, a rule, a sysctl, a table) and compared.
 * Sysctls replay never learned (no `config` recorded) are left out, and so is the endpoint of a peer
 * programmed without one (a client: WireGuard learns it from the client's packets, as intended).
 */
export function diffHosts(replayed: HostState, live: HostState): HostDiff {
  const known = new Set(Object.keys(replayed.sysctls));
  const roaming = new Set([...replayed.devices.values()].flatMap((d) => d.peers.filter((p) => p.endpoint === null).map((p) => `${d.name} ${p.publicKey}`)));
  const devices = new Map(
    [...live.devices].map(([name, d]) => [name, { ...d, peers: d.peers.map((p) => (roaming.has(`${name} ${p.publicKey}`) ? { ...p, endpoint: null } : p)) }]),
  );
  const liveKnown: HostState = { ...live, devices, sysctls: Object.fromEntries(Object.entries(live.sysctls).filter(([k]) => known.has(k))) };
  const a = lines(replayed);
  const b = lines(liveKnown);
  const inB = new Set(b);
  const inA = new Set(a);
  return { missing: a.filter((l) => !inB.has(l)), unexpected: b.filter((l) => !inA.has(l)) };
}

/** The host as one line per fact; a peer line names its device so it stays unique. */
function lines(s: HostState): string[] {
  const out: string[] = [];
  let dev = '';
  for (const l of renderHostState(s).split('\n')) {
    if (!l) continue;
    if (l.startsWith('device ')) dev = l.split(' ')[1]!;
    out.push(l.startsWith('  ') ? `${dev}:${l.trim()}` : l);
  }
  return out;
}

export function formatDiff(d: HostDiff): string {
  if (d.missing.length === 0 && d.unexpected.length === 0) return 'no drift: the host holds exactly what replay says the relay programmed\n';
  return (
    [
      `drift: ${d.missing.length} programmed but missing on the host, ${d.unexpected.length} on the host but not programmed`,
      ...d.missing.map((l) => `- ${l}`),
      ...d.unexpected.map((l) => `+ ${l}`),
    ]
      .map(escapeForTerminal)
      .join('\n') + '\n'
  );
}
