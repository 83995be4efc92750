import { describe, expect, it } from 'vitest';
import {
  convergence,
  formatAge,
  progressLine,
  progressOf,
  renderStatus,
  statusKey,
  type LinkState,
  type RelayObservation,
  type RelayStatusView,
} from '../../src/sim/status.ts';

const NOW = 1_800_000_000_000;

function status(id: string, ids: string[], o: { state?: string; digest?: string; links?: Record<string, LinkState> | null } = {}): RelayStatusView {
  const links = o.links === null ? undefined : Object.entries(o.links ?? Object.fromEntries(ids.filter((x) => x !== id).map((p) => [p, 'up' as LinkState])));
  return {
    relayId: id,
    state: o.state ?? 'serving',
    publicKey: `key-${id}`,
    meshAddress: `100.64.0.${id.slice(-1)}`,
    revision: ids.length,
    relays: ids.map((x) => ({ id: x })),
    topologyDigest: o.digest ?? ids.join(','),
    links: links?.map(([peerId, state]) => ({
      peerId,
      device: `abc${id.slice(-1)}m${peerId.slice(-1)}`,
      state,
      latestHandshakeMs: NOW - 3_000,
      rxBytes: 124,
      txBytes: 180,
    })),
    error: null,
  };
}

const obs = (id: string, s: RelayStatusView | null, process: RelayObservation['process'] = 'running'): RelayObservation => ({
  id,
  publicAddress: `198.18.1.${id.slice(-1)}`,
  pid: process === 'not started' ? null : 100 + Number(id.slice(-1)),
  process,
  status: s,
  statusError: s || process !== 'running' ? null : 'no answer',
});

const three = ['relay-1', 'relay-2', 'relay-3'];

describe('sim convergence', () => {
  it('converges when every running relay serves one topology of all of them with every link up', () => {
    const v = convergence(
      three.map((id) => obs(id, status(id, three))),
      'mesh',
    );
    expect(v).toEqual({ converged: true, missing: [] });
  });

  it('names relays that are not serving or do not answer', () => {
    const v = convergence(
      [obs('relay-1', status('relay-1', three)), obs('relay-2', status('relay-2', three, { state: 'registering' })), obs('relay-3', null)],
      'topology',
    );
    expect(v.converged).toBe(false);
    expect(v.missing).toEqual(['relay-2: registering, not serving', 'relay-3: no status (no answer)']);
  });

  it('a relay that exited by itself (or never started) is missing; one the sim stopped or killed is not expected', () => {
    const two = ['relay-1', 'relay-2'];
    const base = two.map((id) => obs(id, status(id, two)));
    expect(convergence([...base, obs('relay-3', null, 'exited')], 'mesh').missing).toEqual(['relay-3: exited']);
    expect(convergence([...base, obs('relay-3', null, 'not started')], 'mesh').missing).toEqual(['relay-3: not started']);
    expect(convergence([...base, obs('relay-3', null, 'stopped')], 'mesh').converged).toBe(true);
    expect(convergence([...base, obs('relay-3', null, 'killed')], 'mesh').converged).toBe(true);
  });

  it('relays that disagree on the topology, or miss a running relay, are named', () => {
    const two = ['relay-1', 'relay-2'];
    const v = convergence(
      [obs('relay-1', status('relay-1', two)), obs('relay-2', status('relay-2', two)), obs('relay-3', status('relay-3', three))],
      'topology',
    );
    expect(v.missing).toEqual([
      'relay-1: topology revision 2 (2 relays), the relays disagree',
      'relay-2: topology revision 2 (2 relays), the relays disagree',
      'relay-3: topology revision 3 (3 relays), the relays disagree',
      'relay-1: does not see relay-3',
      'relay-2: does not see relay-3',
    ]);
  });

  it('a killed relay still in the topology does not stop convergence', () => {
    const v = convergence(
      [
        obs('relay-1', status('relay-1', three, { links: { 'relay-2': 'up', 'relay-3': 'down' } })),
        obs('relay-2', status('relay-2', three, { links: { 'relay-1': 'up', 'relay-3': 'down' } })),
        obs('relay-3', null, 'killed'),
      ],
      'mesh',
    );
    expect(v.converged).toBe(true);
  });

  it('topology mode ignores links; mesh mode names every link that is not up, absent, or not reported', () => {
    const relays = [
      obs('relay-1', status('relay-1', three, { links: { 'relay-2': 'up', 'relay-3': 'handshaking' } })),
      obs('relay-2', status('relay-2', three, { links: { 'relay-1': 'up' } })),
      obs('relay-3', status('relay-3', three, { links: null })),
    ];
    expect(convergence(relays, 'topology').converged).toBe(true);
    expect(convergence(relays, 'mesh').missing).toEqual([
      'link relay-1 -> relay-3: handshaking',
      'link relay-2 -> relay-3: absent',
      'relay-3: reports no mesh links (a relay-core without WireGuard links)',
    ]);
  });

  it('no running relay is not converged', () => {
    expect(convergence([obs('relay-1', null, 'stopped')], 'topology')).toEqual({ converged: false, missing: ['no relay is running'] });
  });
});

describe('sim status table', () => {
  it('shows handshake ages in s, m and h, and - for never', () => {
    expect(formatAge(null, NOW)).toBe('-');
    expect(formatAge(0, NOW)).toBe('-');
    expect(formatAge(NOW - 4_400, NOW)).toBe('4s');
    expect(formatAge(NOW - 300_000, NOW)).toBe('5m');
    expect(formatAge(NOW - 3 * 3600_000, NOW)).toBe('3h');
  });

  it('renders a row per relay and a row per link with both ends', () => {
    const relays = [
      obs('relay-1', status('relay-1', three, { links: { 'relay-2': 'up', 'relay-3': 'stale' } })),
      obs('relay-2', status('relay-2', three, { links: { 'relay-1': 'up' } })),
      obs('relay-3', null, 'killed'),
    ];
    expect(renderStatus(relays, NOW)).toBe(
      [
        'RELAY    PROCESS        STATE    MESH        PUBLIC      REV  RELAYS  LINKS',
        'relay-1  running (101)  serving  100.64.0.1  198.18.1.1  3    3       1/2 up',
        'relay-2  running (102)  serving  100.64.0.2  198.18.1.2  3    3       1/1 up',
        'relay-3  killed         -        -           198.18.1.3  -    -       -',
        '',
        'LINK                 STATE, HANDSHAKE AGE (1st)  (2nd)  DEVICE  RX/TX BYTES (1st)',
        'relay-1 <-> relay-2  up 3s                       up 3s  abc1m2  124/180',
        'relay-1 <-> relay-3  stale 3s                    -      abc1m3  124/180',
      ].join('\n'),
    );
  });

  it('a running relay without status shows why', () => {
    expect(renderStatus([obs('relay-1', null)], NOW).split('\n')[1]).toBe('relay-1  running (101)  ? no answer  -     198.18.1.1  -    -       -');
  });
});

describe('sim progress and quiet tables', () => {
  it('counts relays serving of those running, and links up of each ordered pair of running relays', () => {
    const relays = [
      obs('relay-1', status('relay-1', three, { links: { 'relay-2': 'up', 'relay-3': 'handshaking' } })),
      obs('relay-2', status('relay-2', three, { state: 'registering', links: null })),
      obs('relay-3', status('relay-3', three)),
      obs('relay-4', null, 'stopped'),
    ];
    const p = progressOf(relays);
    expect(p).toEqual({ running: 3, serving: 2, links: 6, linksUp: 3 });
    expect(progressLine(p, 4_200)).toBe('relays serving 2/3, links up 3/6, 4.2 s');
  });

  it('changes its key when a state, revision or link changes, not when only ages and bytes move', () => {
    const a = [obs('relay-1', status('relay-1', three)), obs('relay-2', status('relay-2', three))];
    const v = convergence(a, 'mesh');
    const older = a.map((o) => ({
      ...o,
      status: { ...o.status!, links: o.status!.links!.map((l) => ({ ...l, latestHandshakeMs: NOW - 60_000, rxBytes: 9_999 })) },
    }));
    expect(statusKey(older, v)).toBe(statusKey(a, v));
    const stale = [obs('relay-1', status('relay-1', three, { links: { 'relay-2': 'stale', 'relay-3': 'up' } })), a[1]!];
    expect(statusKey(stale, convergence(stale, 'mesh'))).not.toBe(statusKey(a, v));
    const killed = [a[0]!, { ...a[1]!, process: 'killed' as const, status: null }];
    expect(statusKey(killed, convergence(killed, 'mesh'))).not.toBe(statusKey(a, v));
  });
});
