import type { StreamInfo } from '@nats-io/jetstream';

/**
 * What `relay-core bus status` says of a stream: its copies, which node leads it and whether every
 * other copy is current. Pure: made from the server's StreamInfo.
 */
export interface StreamStatus {
  stream: string;
  replicas: number;
  /** The node that leads the stream, null on a server that is not part of a cluster. */
  leader: string | null;
  /** The other copies. */
  peers: { name: string; current: boolean; offline: boolean; lag: number; activeMs: number; unreachable: boolean }[];
  messages: number;
  bytes: number;
  firstSeq: number;
  lastSeq: number;
  /** Every copy there and current; else what is not, in `problems`. */
  healthy: boolean;
  problems: string[];
}

/**
 * A copy the leader has not heard from for this long is unreachable: a live follower answers the
 * leader's heartbeats every second or so, while nats-server may go on calling a dead node's copy
 * neither current nor offline (only its `active` grows).
 */
export const UNREACHABLE_AFTER_MS = 5_000;

export function streamStatusOf(info: StreamInfo): StreamStatus {
  const replicas = info.config.num_replicas ?? 1;
  const peers = (info.cluster?.replicas ?? []).map((r) => {
    const offline = r.offline ?? false;
    // nats.js gives `active` in nanoseconds.
    const activeMs = Math.round((r.active ?? 0) / 1e6);
    return { name: r.name, current: r.current, offline, lag: r.lag ?? 0, activeMs, unreachable: offline || (!r.current && activeMs > UNREACHABLE_AFTER_MS) };
  });
  const problems: string[] = [];
  if (replicas > 1 && !info.cluster?.leader) problems.push('no leader');
  if (peers.length < replicas - 1) problems.push(`${replicas - 1 - peers.length} of ${replicas} copies not placed`);
  for (const p of peers) {
    if (p.unreachable) problems.push(`${p.name} unreachable (${p.offline ? 'offline' : `last heard ${Math.round(p.activeMs / 1000)} s ago`})`);
    else if (!p.current) problems.push(`${p.name} catching up (${p.lag} behind)`);
  }
  return {
    stream: info.config.name,
    replicas,
    leader: info.cluster?.leader ?? null,
    peers,
    messages: info.state.messages,
    bytes: info.state.bytes,
    firstSeq: info.state.first_seq,
    lastSeq: info.state.last_seq,
    healthy: problems.length === 0,
    problems,
  };
}

/** One line per stream: `RELAYNET_TOPOLOGY  3 copies  leader nats-2  1,234 messages (seq 1-1,234)  nats-1 current, nats-3 current`. */
export function renderStreamStatus(streams: StreamStatus[]): string {
  const width = Math.max(...streams.map((s) => s.stream.length));
  return streams
    .map((s) => {
      const copies = s.replicas === 1 ? '1 copy' : `${s.replicas} copies`;
      const where = s.leader ? `leader ${s.leader}` : 'one server';
      const seq = s.messages ? ` (seq ${s.firstSeq.toLocaleString('en')}-${s.lastSeq.toLocaleString('en')})` : '';
      const peers = s.peers.map((p) => `${p.name} ${p.unreachable ? 'unreachable' : p.current ? 'current' : `${p.lag} behind`}`);
      const health = s.healthy ? '' : `  NOT HEALTHY: ${s.problems.join('; ')}`;
      return `${s.stream.padEnd(width)}  ${copies}  ${where}  ${s.messages.toLocaleString('en')} messages${seq}${peers.length ? `  ${peers.join(', ')}` : ''}${health}`;
    })
    .join('\n');
}
