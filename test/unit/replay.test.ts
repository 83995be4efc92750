import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCut } from '../../src/cli/commands/replay.ts';
import { decodeStored, fromExportLine, type StoredMessage } from '../../src/events/log.ts';
import { emptyHostState, type HostState, type KernelOp } from '../../src/kernel/host-state.ts';
import { diffHosts, formatReplay } from '../../src/replay/render.ts';
import { scopeDigest } from '../../src/kernel/host-text.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { meshScope } from '../../src/kernel/mesh.ts';
import { RelayReplay, withinCut, type ReplayCut, type ReplayResult } from '../../src/replay/replay.ts';
import { formatTimeline, TimelineBuilder } from '../../src/replay/timeline.ts';
import { devs } from '../support/given.ts';

const ROOT = join(import.meta.dirname, '../..');

/**
 * `test/fixtures/replay-sim.jsonl` is `relay-core events export --sim` of a real 3-relay sim (real
 * WireGuard, NATS, control plane): boot, two client sessions on relay-1, an exit switch, a session
 * closed, relay-2 killed and restarted, relay-3 stopped.
 */
function load(file = 'test/fixtures/replay-sim.jsonl'): StoredMessage[] {
  return readFileSync(join(ROOT, file), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const m = fromExportLine(l);
      if (!m.ok) throw new Error(m.error);
      return m.message;
    });
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (m: StoredMessage) => new TextDecoder().decode(m.data);

function replay(messages: StoredMessage[], relayId: string, cut: ReplayCut | null = null, keepDerivedOps = false): ReplayResult {
  const r = new RelayReplay({ relayId, keepDerivedOps });
  for (const m of messages) if (m.stream === 'topology') r.addTopology(decodeStored(m));
  for (const m of messages) {
    if (m.stream !== 'relay' || !m.subject.startsWith(`relaynet.relay.${relayId}.`)) continue;
    if (!withinCut(m, cut)) break;
    r.add(decodeStored(m));
  }
  return r.result();
}

/** A copy of the log with one relay message's JSON changed. */
function tamper(
  messages: StoredMessage[],
  pick: (m: StoredMessage, ev: { type: string; data: Record<string, unknown> }) => boolean,
  change: (ev: { data: Record<string, unknown> }) => void,
): StoredMessage[] {
  let done = false;
  return messages.map((m) => {
    if (done || m.stream !== 'relay') return m;
    const ev = JSON.parse(text(m));
    if (!pick(m, ev)) return m;
    done = true;
    change(ev);
    return { ...m, data: utf8(JSON.stringify(ev)) };
  });
}

describe('replay of a recorded sim', () => {
  const log = load();
  const relays = ['relay-1', 'relay-2', 'relay-3'];

  it('the recording has client IPv6 (fd64::/96) in its configuration and kernel rounds', () => {
    const texts = log.filter((m) => m.stream === 'relay').map(text);
    expect(texts.some((t) => t.includes('"clientPrefix6":"fd64::/96"'))).toBe(true);
    expect(texts.some((t) => /"op":"rule.add","rule":\{"priority":\d+,"from":"fd64::/.test(t))).toBe(true);
  });

  it('a log recorded before client IPv6 (no prefix in its configuration) still re-plans to exactly its recorded rounds', () => {
    const old = load('test/fixtures/replay-sim-pre-ipv6.jsonl');
    expect(old.some((m) => text(m).includes('clientPrefix6'))).toBe(false);
    for (const id of relays) {
      const r = replay(old, id);
      expect(r.checks.rounds, id).toBeGreaterThan(0);
      expect(r.checks, id).toMatchObject({ matched: r.checks.rounds, mismatched: 0, unchecked: 0, inconsistent: 0 });
    }
  });

  it('re-plans every recorded kernel round of every relay from its cause and gets the recorded operations', () => {
    for (const id of relays) {
      const r = replay(log, id);
      expect(r.events.relay, id).toBeGreaterThan(10);
      expect(r.checks.rounds, id).toBeGreaterThan(0);
      expect(r.checks, id).toMatchObject({ matched: r.checks.rounds, mismatched: 0, unchecked: 0, inconsistent: 0 });
      expect(r.topology.view).toBe('rebuilt');
      expect(r.topology.digestMismatches).toBe(0);
    }
  });

  it('shows each relay as it ended: relay-2 killed once and back, relay-3 stopped with nothing left, relay-1 with one session on its new exit', () => {
    const two = replay(log, 'relay-2');
    expect(two.relay).toMatchObject({ state: 'serving', runs: 2, uncleanEnds: 1 });
    expect(two.links.map((l) => [l.peerId, l.state])).toEqual([['relay-1', 'up']]);
    const three = replay(log, 'relay-3');
    expect(three.relay).toMatchObject({ state: 'stopped', runs: 1, uncleanEnds: 0 });
    expect(three.host.devices.size).toBe(0);
    expect(three.host.rules).toEqual([]);
    expect(three.host.sysctls).toEqual(three.relay.config!.sysctlsBefore);
    const one = replay(log, 'relay-1');
    expect(one.sessions).toHaveLength(1);
    expect(one.sessions[0]).toMatchObject({ exitId: 'relay-3', confirmedExitId: 'relay-3', state: expect.stringMatching(/^(ready|active|idle)$/) });
    const dev = [...one.host.devices.values()].find((d) => d.name.endsWith('c'))!;
    expect(dev.peers.map((p) => p.publicKey)).toEqual([one.sessions[0]!.publicKey]);
  });

  it('gives the same result every time', () => {
    for (const id of relays) expect(JSON.stringify(replay(log, id))).toBe(JSON.stringify(replay(log, id)));
  });

  it('the operations derived are exactly the operations recorded, in order', () => {
    const r = replay(log, 'relay-1', null, true);
    const recorded = log
      .filter((m) => m.stream === 'relay' && m.subject === 'relaynet.relay.relay-1.kernel.kernel-reconciled')
      .flatMap((m) => JSON.parse(text(m)).data.ops as KernelOp[]);
    expect(recorded.length).toBeGreaterThan(20);
    expect(r.rounds!.flatMap((c) => c.derived ?? [])).toEqual(recorded);
  });

  it('cut at a sequence: the state as it was then (the removed session still open, fewer rounds)', () => {
    const all = replay(log, 'relay-1');
    const closedAt = log.find((m) => m.subject.startsWith('relaynet.relay.relay-1.session.') && text(m).includes('"state":"closed"'))!.seq;
    const before = replay(log, 'relay-1', { kind: 'seq', seq: closedAt - 1 });
    expect(before.upTo!.seq).toBe(closedAt - 1);
    expect(before.sessions.length).toBe(all.sessions.length + 1);
    expect(before.kernel.rounds).toBeLessThan(all.kernel.rounds);
    expect(before.checks.mismatched).toBe(0);
    // A cut by time gives the same as a cut by the sequence at that time.
    const at = log.find((m) => m.stream === 'relay' && m.seq === closedAt - 1)!;
    expect(JSON.stringify(replay(log, 'relay-1', { kind: 'time', time: new Date(at.time) }))).toBe(JSON.stringify(before));
  });

  it('reports a corrupt, a truncated and a foreign message with their sequences and replays the rest', () => {
    const relay1 = log.filter((m) => m.stream === 'relay' && m.subject.startsWith('relaynet.relay.relay-1.'));
    const link = relay1.find((m) => m.subject.endsWith('.link.link-state-changed'))!;
    const forged = JSON.parse(text(link));
    forged.source = 'relay-2';
    const bad: StoredMessage[] = [
      { ...link, seq: 100_001, data: utf8('{"id": not json') },
      { ...link, seq: 100_002, data: link.data.slice(0, 40) },
      { ...link, seq: 100_003, data: utf8(JSON.stringify(forged)) },
    ];
    const r = replay([...log, ...bad], 'relay-1');
    expect(r.skipped.map((s) => [s.seq, s.reason])).toEqual([
      [100_001, 'malformed'],
      [100_002, 'malformed'],
      [100_003, 'subject-mismatch'],
    ]);
    const clean = replay(log, 'relay-1');
    expect(r.checks).toEqual(clean.checks);
    expect(r.host).toEqual(clean.host);
  });

  it('finds a round whose recorded operations are not what the relay would have planned', () => {
    let seq = 0;
    const changed = tamper(
      log,
      (m, ev) => {
        if (m.subject !== 'relaynet.relay.relay-1.kernel.kernel-reconciled' || (ev.data.ops as unknown[]).length <= 1) return false;
        seq = m.seq;
        return true;
      },
      (ev) => void (ev.data.ops as unknown[]).pop(),
    );
    const r = replay(changed, 'relay-1');
    // That round, and later ones that find the replayed host without the missing operation's result.
    expect(r.checks.mismatched).toBeGreaterThanOrEqual(1);
    expect(r.checks.mismatches[0]!.seq).toBe(seq);
    expect(r.checks.mismatches[0]!.derived!.length).toBe(r.checks.mismatches[0]!.recorded.length + 1);
    expect(formatReplay(r)).toMatch(/DIFFERS seq \d+ \(/);
  });

  it("re-derives a session expiry's round with the clients owner's desire, and flags a round that kept the expired session", () => {
    const end = replay(log, 'relay-1');
    const s = end.sessions[0]!;
    const device = [...end.host.devices.values()].find((d) => d.name.endsWith('c'))!.name;
    const last = log.filter((m) => m.stream === 'relay').at(-1)!;
    const like = (suffix: string) => log.find((m) => m.subject === `relaynet.relay.relay-1.${suffix}`)!;
    /** The log with relay-1's session expired, and the clients round it caused recording `ops`. */
    const expiring = (ops: KernelOp[]): StoredMessage[] => {
      const expired = JSON.parse(text(like('session.client-session-state-changed')));
      expired.id = '00000000-0000-4000-8000-00000000e001';
      expired.data = {
        ...expired.data,
        sessionId: s.sessionId,
        publicKey: s.publicKey,
        address: s.address,
        exitId: s.exitId,
        state: 'expired',
        reason: 'past its expiry',
      };
      const round = JSON.parse(text(like('kernel.kernel-reconciled')));
      round.id = '00000000-0000-4000-8000-00000000e002';
      round.causationId = expired.id;
      round.data = { owner: 'clients', planned: ops.length, applied: ops.length, failed: false, ops };
      const at = (m: StoredMessage, n: number, ev: unknown): StoredMessage => ({ ...m, seq: last.seq + n, time: last.time, data: utf8(JSON.stringify(ev)) });
      return [...log, at(like('session.client-session-state-changed'), 1, expired), at(like('kernel.kernel-reconciled'), 2, round)];
    };
    // Its exit (relay-3) left, so its rules are gone already: the expiry takes its peer off the client device.
    const r = replay(expiring([{ op: 'wg.peer.del', dev: device, publicKey: s.publicKey }]), 'relay-1');
    expect(r.checks).toMatchObject({ rounds: end.checks.rounds + 1, matched: end.checks.rounds + 1, mismatched: 0, inconsistent: 0 });
    expect(r.host.devices.get(device)!.peers).toEqual([]);
    // A round that did nothing for the expiry (as a desire that ignored it would plan) differs.
    const forged = replay(expiring([]), 'relay-1');
    expect(forged.checks.mismatched).toBe(1);
    expect(forged.checks.mismatches[0]).toMatchObject({
      owner: 'clients',
      recorded: [],
      derived: [{ op: 'wg.peer.del', dev: device, publicKey: s.publicKey }],
    });
  });

  it('a topology stream with a hole leaves the view unavailable and says so; actor states and host still replay', () => {
    const withHole = log.filter((m) => !(m.stream === 'topology' && text(m).includes('"revision":2,')));
    expect(withHole.length).toBe(log.length - 1);
    const r = replay(withHole, 'relay-1');
    expect(r.topology.view).toBe('unavailable');
    expect(r.topology.viewNote).toMatch(/revision 2 is not in the topology stream/);
    expect(r.checks.matched).toBe(0);
    expect(r.checks.uncheckedWhy['view unavailable']).toBe(r.checks.rounds);
    expect(r.host).toEqual(replay(log, 'relay-1').host);
  });

  it('replays a log recorded by an older relay-core (no configuration, no causes): host and actors yes, checks unchecked', () => {
    const old = load('test/fixtures/events-v1.jsonl');
    const r = replay(old, 'relay-1');
    expect(r.relay.config).toBeNull();
    expect(r.checks.rounds).toBeGreaterThan(0);
    expect(r.checks.unchecked).toBe(r.checks.rounds);
    expect(Object.keys(r.checks.uncheckedWhy)).toEqual(['no configuration recorded (RelayStarted before v3)']);
    expect([...r.host.devices.keys()].length).toBeGreaterThan(0);
    expect(r.links.length).toBeGreaterThan(0);
  });
});

describe('replay of rounds recorded in parts (KernelReconciled v2)', () => {
  const log = load();
  const ROUND = 'relaynet.relay.relay-1.kernel.kernel-reconciled';
  /**
   * relay-1's log with every round written as v2: rounds of two or more operations in two parts (the
   * relay's sequences doubled to make room), `reached` as `digestOf` says (null: not recorded).
   */
  function inParts(drop: (round: number, part: number) => boolean = () => false, digestOf: (round: number) => string | null = () => null): StoredMessage[] {
    const out: StoredMessage[] = [];
    let round = 0;
    for (const m of log) {
      if (m.stream !== 'relay') {
        out.push(m);
        continue;
      }
      if (m.subject !== ROUND) {
        out.push({ ...m, seq: m.seq * 2 });
        continue;
      }
      const ev = JSON.parse(text(m));
      round++;
      const ops = ev.data.ops as KernelOp[];
      const halves = ops.length >= 2 ? [ops.slice(0, 1), ops.slice(1)] : [ops];
      for (const [i, part] of halves.entries()) {
        if (drop(round, i + 1)) continue;
        const v2 = { ...ev, version: 2, data: { ...ev.data, round, part: i + 1, parts: halves.length, focused: false, ops: part, reached: digestOf(round) } };
        out.push({ ...m, seq: m.seq * 2 + i, data: utf8(JSON.stringify(v2)) });
      }
    }
    return out;
  }

  it('checks a round once its last part is in: the same verdicts as the rounds written whole', () => {
    const whole = replay(log, 'relay-1');
    const parted = replay(inParts(), 'relay-1');
    expect(parted.checks).toEqual({ ...whole.checks, reachedChecked: 0 });
    expect(parted.host).toEqual(whole.host);
    expect(parted.kernel).toEqual(whole.kernel);
  });

  it('a round with a part missing is unchecked, says why, and the rest still match', () => {
    const multi = log.filter((m) => m.subject === ROUND).findIndex((m) => (JSON.parse(text(m)).data.ops as unknown[]).length >= 2) + 1;
    const r = replay(
      inParts((round, part) => round === multi && part === 2),
      'relay-1',
    );
    expect(r.checks.uncheckedWhy).toMatchObject({ 'parts of the round are missing from the log': 1 });
    expect(r.checks.mismatched).toBeGreaterThanOrEqual(0);
    expect(r.checks.matched).toBeGreaterThan(0);
  });

  it('a log that ends inside a round counts that round, unchecked, with the operations it has applied', () => {
    const rounds = log.filter((m) => m.subject === ROUND);
    const last = rounds.length;
    const lastOps = (JSON.parse(text(rounds[last - 1]!)).data.ops as unknown[]).length;
    expect(lastOps).toBeGreaterThanOrEqual(2);
    const whole = replay(inParts(), 'relay-1');
    const cut = replay(
      inParts((round, part) => round === last && part === 2),
      'relay-1',
    );
    expect(cut.kernel.rounds).toBe(whole.kernel.rounds);
    expect(cut.kernel.mutations).toBe(whole.kernel.mutations - (lastOps - 1));
    expect(cut.checks.uncheckedWhy).toMatchObject({ 'parts of the round are missing from the log': 1 });
  });

  it("compares each round's recorded digest of the reached scope with the host replayed", () => {
    // The digest relay-1 would have recorded after its first mesh round: the replayed host's mesh scope then.
    const firstMesh = log.find((m) => m.subject === ROUND && JSON.parse(text(m)).data.owner === 'mesh')!;
    const roundNo = log.filter((m) => m.subject === ROUND).indexOf(firstMesh) + 1;
    const upTo = replay(log, 'relay-1', { kind: 'seq', seq: firstMesh.seq });
    const self = upTo.topology.relays.find((r) => r.id === 'relay-1')!;
    const scope = meshScope(upTo.relay.config!.wgPrefix, self);
    const right = scopeDigest(new MemoryKernelBackend({ initial: upTo.host }).readSync(scope));
    const good = replay(
      inParts(undefined, (round) => (round === roundNo ? right : null)),
      'relay-1',
    );
    expect(good.checks).toMatchObject({ reachedChecked: 1, reachedMismatched: 0, mismatched: 0 });
    const bad = replay(
      inParts(undefined, (round) => (round === roundNo ? '0123456789abcdef' : null)),
      'relay-1',
    );
    expect(bad.checks).toMatchObject({ reachedChecked: 1, reachedMismatched: 1 });
    expect(bad.checks.mismatches.map((m) => [m.owner, m.verdict, m.reached])).toEqual([['mesh', 'match', 'mismatch']]);
    expect(formatReplay(bad)).toMatch(/reached scopes: 0 of 1 as recorded/);
    expect(formatReplay(bad)).toMatch(/DIFFERS seq \d+ \(mesh, cause [^)]+\): the reached scope is not what the relay recorded/);
  });
});

describe('replay timeline', () => {
  const log = load();
  const build = (sel: { link?: string; session?: string }) => {
    const t = new TimelineBuilder({ relayId: 'relay-1', ...sel });
    for (const m of log) if (m.stream === 'relay') t.add(decodeStored(m));
    return t.result();
  };

  it('one link: its states with reasons, and the kernel rounds on its device with the event that caused them', () => {
    const items = build({ link: 'relay-2' });
    expect(
      items
        .filter((i) => i.subject === 'link relay-2')
        .map((i) => i.what)
        .slice(0, 4),
    ).toEqual(['desired', 'configuring', 'handshaking', 'up']);
    const kernel = items.filter((i) => i.subject === 'kernel mesh');
    expect(kernel[0]!.cause).toMatch(/^TopologySeeded revision \d+ \(boot\)$/);
    expect(kernel[0]!.what).toMatch(/link\.add/);
    expect(items.some((i) => i.subject.startsWith('session'))).toBe(false);
    expect(formatTimeline(items)).toMatch(/link relay-2\s+up\s+<- handshake/);
  });

  it('one session: opened, programmed, steered to its new exit, with the topology events behind the rounds', () => {
    const sessionId = JSON.parse(text(log.find((m) => m.subject.endsWith('.session.client-session-steered'))!)).data.sessionId as string;
    const items = build({ session: sessionId });
    const causes = items.filter((i) => i.subject === 'kernel clients').map((i) => i.cause.split(' ')[0]);
    expect(causes).toContain('ClientSessionOpened');
    expect(causes).toContain('ClientSessionExitChanged');
    expect(items.filter((i) => i.what.startsWith('steered')).length).toBe(2);
  });
});

describe('drift', () => {
  const host = (): HostState => ({
    ...emptyHostState(),
    devices: devs({
      rc1c: {
        name: 'rc1c',
        publicKey: 'K',
        listenPort: 51820,
        mtu: 1420,
        addresses: ['100.96.0.1/22'],
        up: true,
        peers: [{ publicKey: 'C', endpoint: null, allowedIps: ['100.96.0.2/32'], keepaliveSeconds: 0 }],
      },
    }),
    routes: [{ dst: '100.64.0.2/32', dev: 'rc1c', table: 254, src: null }],
    sysctls: { 'net.ipv4.ip_forward': '1' },
  });

  it('ignores what replay cannot know (a client endpoint learned by roaming, sysctls it never read), reports the rest', () => {
    const live = host();
    live.devices.get('rc1c')!.peers[0]!.endpoint = '198.18.2.1:40000';
    live.sysctls['net.ipv4.conf.all.forwarding'] = '0';
    expect(diffHosts(host(), live)).toEqual({ missing: [], unexpected: [] });
    live.routes = [];
    live.rules = [{ priority: 20_002, from: '100.96.0.9/32', iif: 'rc1c', table: 100_001 }];
    live.sysctls['net.ipv4.ip_forward'] = '0';
    expect(diffHosts(host(), live)).toEqual({
      missing: ['route 100.64.0.2/32 dev rc1c table 254', 'sysctl net.ipv4.ip_forward = 1'],
      unexpected: ['rule priority 20002 from 100.96.0.9/32 iif rc1c lookup 100001', 'sysctl net.ipv4.ip_forward = 0'],
    });
  });
});

describe('replay --to', () => {
  it('takes a sequence or an ISO time, and refuses anything else', () => {
    expect(parseCut('120')).toEqual({ kind: 'seq', seq: 120 });
    expect(parseCut('2026-11-25T10:00:00Z')).toEqual({ kind: 'time', time: new Date('2026-11-25T10:00:00Z') });
    expect(parseCut(undefined)).toBeNull();
    expect(() => parseCut('yesterday')).toThrow(/sequence .* or an ISO time/);
    expect(() => parseCut('2026-13-45')).toThrow(/ISO time/);
  });
});
