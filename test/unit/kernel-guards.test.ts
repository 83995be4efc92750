import { describe, expect, it } from 'vitest';
import { prng, type Rng } from '../support/prng.ts';
import type { ClientSession, RelayRecord } from '../../src/contract/topology.events.ts';
import {
  clientDevice,
  clientRulePriorities,
  clientScope,
  desiredClientState,
  nftTableName,
  releasedClientState,
  type ClientOptions,
} from '../../src/kernel/clients.ts';
import { applyPlan, describeOp } from '../../src/kernel/execute.ts';
import { embedCidr6 } from '../../src/kernel/ipv6.ts';
import type { DesiredHostState, HostState, KernelBackend, KernelOp, KernelScope } from '../../src/kernel/host-state.ts';
import { MemoryKernelBackend } from '../../src/kernel/memory-backend.ts';
import { planKernel } from '../../src/kernel/plan.ts';
import { hostBeforeRelay, session } from '../support/clients-harness.ts';
import { relay } from '../support/given.ts';

/**
 * The ordering property of issue "Safe by default": at no prefix of any plan, whichever of its
 * operations fail, is a client peer programmed without its guards (the relay's nftables table and the
 * fail-closed rule); and a peer this plan adds never runs under a table other than the desired one.
 */

const relays: Record<string, RelayRecord> = Object.fromEntries([1, 2, 3, 4].map((n) => [`relay-${n}`, relay(n)]));
const self = relays['relay-1']!;
const base: ClientOptions = {
  wgPrefix: 'rc',
  privateKeyFile: '/state/wg.key',
  mtu: 1420,
  exitTableBase: 100_000,
  rulePriorityBase: 20_000,
  clientSupernet: '100.96.0.0/11',
  denyCidrs: [],
  allowCidrs: [],
  serviceCidrs: [],
  clientPrefix6: 'fd64::/96',
  privateSessions: true,
  echoService: true,
};
const SCOPE: KernelScope = clientScope(self, base);
const DEV = clientDevice('rc', 1);
const TABLE = nftTableName('rc', 1);
const FAIL_CLOSED = clientRulePriorities(self, base.rulePriorityBase)[1];

/** A random client state of relay-1: some sessions to random exits (one may be unknown), a random policy, or the teardown. */
function randomClientState(r: Rng): DesiredHostState {
  if (r.chance(0.1)) return releasedClientState({ 'net.ipv4.ip_forward': '0', 'net.ipv4.conf.all.rp_filter': '1' });
  const sessions: ClientSession[] = [];
  for (let n = 1; n <= 12; n++) if (r.chance(0.4)) sessions.push(session(n, self, r.pick(['relay-2', 'relay-3', 'relay-4', 'relay-9'])));
  const opts = { ...base, denyCidrs: r.chance(0.5) ? ['203.0.113.0/24'] : [], serviceCidrs: r.chance(0.5) ? ['198.18.0.2/32'] : [], mtu: r.pick([1420, 1380]) };
  return desiredClientState(self, relays, sessions, opts);
}

/** The table and the fail-closed rule of each family (the IPv4 pool and its IPv6 counterpart). */
const guarded = (s: HostState) =>
  s.nftTables[TABLE] !== undefined &&
  [self.clientPool, embedCidr6(base.clientPrefix6!, self.clientPool)].every((pool) =>
    s.rules.some((x) => x.priority === FAIL_CLOSED && x.from === pool && x.table === null && x.iif === DEV),
  );
const peersOf = (s: HostState) => new Set(s.devices.get(DEV)?.peers.map((p) => p.publicKey) ?? []);

/** A backend that checks the property after every operation it applies. */
function checking(inner: MemoryKernelBackend, before: HostState, desired: DesiredHostState, context: () => string): KernelBackend & { checked: number } {
  const old = peersOf(before);
  const want = desired.nftTables[TABLE]?.digest;
  const b = {
    kind: 'memory' as const,
    checked: 0,
    read: (scope: KernelScope) => inner.read(scope),
    observe: (devices: string[]) => inner.observe(devices),
    counters: (table: string) => inner.counters(table),
    ipv6: () => inner.ipv6(),
    async apply(op: KernelOp) {
      await inner.apply(op);
      const now = await inner.read(SCOPE);
      const peers = peersOf(now);
      b.checked++;
      if (peers.size > 0) expect(guarded(now), `${context()}\nafter ${describeOp(op)}: a client peer without its guards`).toBe(true);
      for (const k of peers)
        if (!old.has(k)) expect(now.nftTables[TABLE]?.digest, `${context()}\nafter ${describeOp(op)}: new peer under another table`).toBe(want);
    },
  };
  return b;
}

describe('guards before client peers', () => {
  it('holds at every prefix of 300 random plans, with random operations failing', async () => {
    let ops = 0;
    let failures = 0;
    for (let seed = 0; seed < 300; seed++) {
      const r = prng(0x5afe + seed);
      // The host starts from some earlier client state, reached in full or in part.
      const earlier = randomClientState(r);
      const inner = new MemoryKernelBackend({
        initial: hostBeforeRelay(),
      });
      const first = planKernel(await inner.read(SCOPE), earlier);
      const cut = r.int(first.length + 1);
      for (const op of first.slice(0, cut)) await inner.apply(op);
      const before = await inner.read(SCOPE);
      // Unless the earlier state was cut short, the property holds already (it is what this test checks).
      const desired = randomClientState(r);
      const plan = planKernel(before, desired);
      const failing = new Set(plan.filter(() => r.chance(0.15)));
      const host = new MemoryKernelBackend({ initial: before, failOn: (op) => failing.has(op) });
      const b = checking(host, before, desired, () => `seed ${seed}, failing: ${[...failing].map(describeOp).join('; ')}`);
      if (peersOf(before).size > 0 && !guarded(before)) continue; // an earlier plan cut at a prefix the property forbids cannot happen
      const result = await applyPlan(b, plan, SCOPE);
      ops += b.checked;
      failures += result.failures.length;
    }
    // The property was checked on many operations, also with failures.
    expect(ops).toBeGreaterThan(2_000);
    expect(failures).toBeGreaterThan(100);
  });

  it('a failing nftables table keeps every client peer of the plan off the host, and forwarding off', async () => {
    const desired = desiredClientState(self, relays, [session(1, self, 'relay-2'), session(2, self, 'relay-3')], base);
    const host = new MemoryKernelBackend({
      initial: hostBeforeRelay(),
      failOn: (op) => op.op === 'nft.table.set',
    });
    const result = await applyPlan(host, planKernel(await host.read(SCOPE), desired), SCOPE);
    expect(result.failures.map((f) => f.op.op)).toEqual(['nft.table.set']);
    expect(result.skipped.map((op) => op.op).sort()).toEqual(['sysctl.set', 'sysctl.set', 'sysctl.set', 'wg.peer.set', 'wg.peer.set']);
    expect(result.reached.devices.get(DEV)!.peers).toEqual([]);
    expect(result.reached.sysctls['net.ipv4.ip_forward']).toBe('0');
    expect(result.reached.sysctls['net.ipv6.conf.all.forwarding']).toBe('0');
    // The device, its rules and the fail-closed rule are in place.
    expect(result.reached.rules.some((x) => x.priority === FAIL_CLOSED && x.table === null)).toBe(true);
  });
});
