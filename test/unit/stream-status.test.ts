import type { StreamInfo } from '@nats-io/jetstream';
import { describe, expect, it } from 'vitest';
import { renderStreamStatus, streamStatusOf } from '../../src/bus/stream-status.ts';

/** A StreamInfo as nats-server answers it, with only the fields stream-status reads. */
function info(replicas: number, cluster?: StreamInfo['cluster'], messages = 12): StreamInfo {
  return {
    config: { name: 'RELAYNET_TOPOLOGY', num_replicas: replicas },
    state: { messages, bytes: messages * 100, first_seq: messages ? 1 : 0, last_seq: messages },
    ...(cluster ? { cluster } : {}),
  } as unknown as StreamInfo;
}
const peer = (name: string, over: { current?: boolean; offline?: boolean; lag?: number; activeMs?: number } = {}) => ({
  name,
  current: over.current ?? true,
  offline: over.offline ?? false,
  active: (over.activeMs ?? 250) * 1e6,
  lag: over.lag ?? 0,
});

describe('bus status: a stream and its copies', () => {
  it('a single server: one copy, no leader, healthy', () => {
    const s = streamStatusOf(info(1));
    expect(s).toMatchObject({ replicas: 1, leader: null, peers: [], healthy: true, problems: [], messages: 12, lastSeq: 12 });
    expect(renderStreamStatus([s])).toBe('RELAYNET_TOPOLOGY  1 copy  one server  12 messages (seq 1-12)');
  });

  it('3 copies, every other copy current: healthy, with each peer named', () => {
    const s = streamStatusOf(info(3, { name: 'c', leader: 'nats-2', replicas: [peer('nats-1'), peer('nats-3')] }));
    expect(s.healthy).toBe(true);
    expect(s.peers).toEqual([
      { name: 'nats-1', current: true, offline: false, lag: 0, activeMs: 250, unreachable: false },
      { name: 'nats-3', current: true, offline: false, lag: 0, activeMs: 250, unreachable: false },
    ]);
    expect(renderStreamStatus([s])).toBe('RELAYNET_TOPOLOGY  3 copies  leader nats-2  12 messages (seq 1-12)  nats-1 current, nats-3 current');
  });

  it('a copy offline and one catching up: not healthy, each named', () => {
    const s = streamStatusOf(
      info(3, { name: 'c', leader: 'nats-1', replicas: [peer('nats-2', { current: false, offline: true }), peer('nats-3', { current: false, lag: 7 })] }),
    );
    expect(s.healthy).toBe(false);
    expect(s.problems).toEqual(['nats-2 unreachable (offline)', 'nats-3 catching up (7 behind)']);
    expect(renderStreamStatus([s])).toContain('nats-2 unreachable, nats-3 7 behind  NOT HEALTHY: nats-2 unreachable (offline); nats-3 catching up (7 behind)');
  });

  it('a copy not current that the leader has not heard from for over 5 s is unreachable (a dead node nats-server still calls neither)', () => {
    const s = streamStatusOf(
      info(3, {
        name: 'c',
        leader: 'nats-1',
        replicas: [peer('nats-2', { current: false, activeMs: 61_053 }), peer('nats-3', { current: false, activeMs: 4_000, lag: 2 })],
      }),
    );
    expect(s.problems).toEqual(['nats-2 unreachable (last heard 61 s ago)', 'nats-3 catching up (2 behind)']);
    expect(s.peers.map((p) => p.unreachable)).toEqual([true, false]);
  });

  it('no leader, or copies the cluster has not placed: not healthy', () => {
    expect(streamStatusOf(info(3, { name: 'c', replicas: [peer('nats-1'), peer('nats-3')] })).problems).toEqual(['no leader']);
    expect(streamStatusOf(info(3, { name: 'c', leader: 'nats-1', replicas: [peer('nats-2')] })).problems).toEqual(['1 of 3 copies not placed']);
  });

  it('an empty stream says 0 messages and no sequence range', () => {
    expect(renderStreamStatus([streamStatusOf(info(1, undefined, 0))])).toBe('RELAYNET_TOPOLOGY  1 copy  one server  0 messages');
  });
});
