/**
 * The sim's view of its relays: pure functions from what each relay's status socket said to a
 * convergence verdict (with what is missing) and a status table.
 */

import { table } from '../lib/table.ts';

export type LinkState = 'desired' | 'configuring' | 'handshaking' | 'up' | 'stale' | 'down' | 'removing' | 'removed';

/** The part of a relay's status (RelayStatus, from its socket) the sim reads. */
export interface RelayStatusView {
  relayId: string;
  state: string;
  publicKey: string;
  meshAddress: string | null;
  revision: number;
  relays: { id: string }[];
  topologyDigest: string;
  /** Absent from a relay-core without mesh links. */
  links?: {
    peerId: string;
    device: string;
    state: LinkState;
    /** Epoch ms of the latest handshake. */
    latestHandshakeMs: number | null;
    rxBytes: number;
    txBytes: number;
  }[];
  error: string | null;
}

export interface RelayObservation {
  id: string;
  publicAddress: string;
  pid: number | null;
  /** running, or why not: stopped/killed by the sim, exited by itself, never started. */
  process: 'running' | 'stopped' | 'killed' | 'exited' | 'not started';
  status: RelayStatusView | null;
  /** Why there is no status although the process runs. */
  statusError: string | null;
}

/**
 * `topology`: every relay that should run does, every running relay serves, they agree on one
 * topology digest, and each sees every running relay. `mesh`: also, each has a link in state `up`
 * to every other running relay.
 */
export type ConvergenceMode = 'topology' | 'mesh';

export interface Verdict {
  converged: boolean;
  /** What is missing, one line each (empty when converged). */
  missing: string[];
}

export function convergence(relays: RelayObservation[], mode: ConvergenceMode): Verdict {
  const running = relays.filter((r) => r.process === 'running');
  const missing: string[] = [];
  if (running.length === 0) missing.push('no relay is running');
  // One the sim stopped or killed is not expected; one that died by itself (or never started) is.
  for (const r of relays) if (r.process === 'exited' || r.process === 'not started') missing.push(`${r.id}: ${r.process}`);
  for (const r of running) {
    if (!r.status) missing.push(`${r.id}: no status${r.statusError ? ` (${r.statusError})` : ''}`);
    else if (r.status.state !== 'serving') missing.push(`${r.id}: ${r.status.state}, not serving${r.status.error ? ` (${r.status.error})` : ''}`);
  }
  const serving = running.filter((r) => r.status?.state === 'serving').map((r) => ({ id: r.id, s: r.status! }));
  const digests = new Set(serving.map((r) => r.s.topologyDigest));
  if (digests.size > 1) {
    for (const r of serving) missing.push(`${r.id}: topology revision ${r.s.revision} (${r.s.relays.length} relays), the relays disagree`);
  }
  for (const r of serving) {
    const seen = new Set(r.s.relays.map((x) => x.id));
    const unseen = running.filter((o) => !seen.has(o.id)).map((o) => o.id);
    if (unseen.length) missing.push(`${r.id}: does not see ${unseen.join(', ')}`);
  }
  if (mode === 'mesh') {
    for (const r of serving) {
      if (!r.s.links) {
        missing.push(`${r.id}: reports no mesh links (a relay-core without WireGuard links)`);
        continue;
      }
      for (const o of running) {
        if (o.id === r.id) continue;
        const l = r.s.links.find((x) => x.peerId === o.id);
        if (!l) missing.push(`link ${r.id} -> ${o.id}: absent`);
        else if (l.state !== 'up') missing.push(`link ${r.id} -> ${o.id}: ${l.state}`);
      }
    }
  }
  return { converged: missing.length === 0, missing };
}

/**
 * How far a network is on its way: relays serving of those running, and links up of those expected
 * (each ordered pair of running relays). Pure.
 */
export function progressOf(relays: readonly RelayObservation[]): { running: number; serving: number; links: number; linksUp: number } {
  const running = relays.filter((r) => r.process === 'running');
  const ids = new Set(running.map((r) => r.id));
  const serving = running.filter((r) => r.status?.state === 'serving');
  const linksUp = serving.reduce((n, r) => n + (r.status!.links ?? []).filter((l) => l.state === 'up' && ids.has(l.peerId)).length, 0);
  return { running: running.length, serving: serving.length, links: running.length * (running.length - 1), linksUp };
}

/** One line of progress: `relays serving 3/4, links up 10/12, 4.2 s`. */
export function progressLine(p: ReturnType<typeof progressOf>, elapsedMs: number): string {
  return `relays serving ${p.serving}/${p.running}, links up ${p.linksUp}/${p.links}, ${(elapsedMs / 1000).toFixed(1)} s`;
}

/**
 * What the status table says that matters, without what changes by itself (ages, byte counts): the
 * foreground sim prints a table to a pipe only when this changes. Pure.
 */
export function statusKey(relays: readonly RelayObservation[], verdict: Verdict): string {
  return JSON.stringify([
    verdict.converged,
    verdict.missing,
    relays.map((r) => [
      r.id,
      r.process,
      r.status?.state ?? null,
      r.status?.revision ?? null,
      r.status?.topologyDigest ?? null,
      (r.status?.links ?? []).map((l) => [l.peerId, l.state]),
    ]),
  ]);
}

/** `3s`, `2m`, `-` for never. */
export function formatAge(latestHandshakeMs: number | null, nowMs: number): string {
  if (latestHandshakeMs === null || latestHandshakeMs <= 0) return '-';
  const s = Math.max(0, Math.round((nowMs - latestHandshakeMs) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** A table of columns as wide as their widest cell. */
function fitted(header: string[], rows: string[][]): string[] {
  return table(
    header.map(() => ({})),
    [header, ...rows],
  );
}

/**
 * The relays table, then one row per pair of relays that has a link at either end, with each end's
 * view of it (state and handshake age as seen from the first, then the second relay).
 */
export function renderStatus(relays: RelayObservation[], nowMs: number): string {
  const relayRows = relays.map((r) => [
    r.id,
    r.process === 'running' ? `running (${r.pid})` : r.process,
    r.status?.state ?? (r.process === 'running' ? `? ${r.statusError ?? ''}`.trim() : '-'),
    r.status?.meshAddress ?? '-',
    r.publicAddress,
    r.status ? String(r.status.revision) : '-',
    r.status ? String(r.status.relays.length) : '-',
    r.status?.links ? `${r.status.links.filter((l) => l.state === 'up').length}/${r.status.links.length} up` : '-',
  ]);
  const lines = fitted(['RELAY', 'PROCESS', 'STATE', 'MESH', 'PUBLIC', 'REV', 'RELAYS', 'LINKS'], relayRows);

  const linkRows: string[][] = [];
  const linkOf = (from: RelayObservation, to: RelayObservation) => from.status?.links?.find((l) => l.peerId === to.id);
  for (let i = 0; i < relays.length; i++) {
    for (let j = i + 1; j < relays.length; j++) {
      const [a, b] = [relays[i]!, relays[j]!];
      const ab = linkOf(a, b);
      const ba = linkOf(b, a);
      if (!ab && !ba) continue;
      const end = (l: typeof ab) => (l ? `${l.state} ${formatAge(l.latestHandshakeMs, nowMs)}` : '-');
      linkRows.push([`${a.id} <-> ${b.id}`, end(ab), end(ba), (ab ?? ba)!.device, ab ? `${ab.rxBytes}/${ab.txBytes}` : '-']);
    }
  }
  if (linkRows.length) lines.push('', ...fitted(['LINK', 'STATE, HANDSHAKE AGE (1st)', '(2nd)', 'DEVICE', 'RX/TX BYTES (1st)'], linkRows));
  return lines.join('\n');
}
