import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import { fromCallback } from 'xstate';
import type { ResolvedEvent, ResolverEvent } from '../actors/topology.machine.ts';
import { chooseAddress } from '../kernel/endpoint-resolution.ts';
import type { Logger } from '../lib/logger.ts';

/**
 * The resolver actor: looks up the DNS names of peer endpoints for the topology actor (the world part
 * of name resolution; what a result means is decided in `src/kernel/endpoint-resolution.ts`). A peer
 * is looked up as soon as it appears or its endpoint names another host, then every `intervalMs`; a
 * failed lookup is retried sooner, `retryBaseMs` doubling up to `intervalMs`. Every outcome is
 * reported; the topology actor keeps (and records) only changes. One lookup per peer at a time.
 */

export interface ResolverOptions {
  intervalMs: number;
  retryBaseMs?: number;
  /** A lookup that has not answered by then counts as failed (the lookup itself cannot be cancelled). */
  timeoutMs?: number;
  logger: Logger;
  /** Every address of a name, in the resolver's order (tests replace it). */
  lookupAll?: (host: string) => Promise<{ address: string; family: number }[]>;
  /** Which families this relay can reach (tests replace it). */
  usableFamilies?: () => { v4: boolean; v6: boolean };
}

/** IPv4 and IPv6 are usable when the host has an address of that family other than loopback (and, for IPv6, link-local). */
export function hostFamilies(): { v4: boolean; v6: boolean } {
  const addrs = Object.values(networkInterfaces()).flatMap((a) => a ?? []);
  return {
    v4: addrs.some((a) => a.family === 'IPv4' && !a.internal),
    v6: addrs.some((a) => a.family === 'IPv6' && !a.internal && !/^fe[89ab]/i.test(a.address)),
  };
}

const systemLookup = (host: string) => lookup(host, { all: true, verbatim: true });

export function resolverActor(o: ResolverOptions) {
  const retryBaseMs = o.retryBaseMs ?? 2_000;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const lookupAll = o.lookupAll ?? systemLookup;
  const usable = o.usableFamilies ?? hostFamilies;
  return fromCallback<ResolverEvent, Record<string, never>>(({ sendBack, receive }) => {
    const log = o.logger.child({ actor: 'resolver' });
    const peers = new Map<string, { host: string; failures: number; timer: NodeJS.Timeout | null; busy: boolean }>();
    let stopped = false;

    const schedule = (peerId: string, delayMs: number) => {
      const p = peers.get(peerId);
      if (!p || stopped) return;
      if (p.timer) clearTimeout(p.timer);
      p.timer = setTimeout(() => void resolve(peerId), delayMs);
    };

    const resolve = async (peerId: string) => {
      const p = peers.get(peerId);
      if (!p || p.busy || stopped) return;
      p.timer = null;
      p.busy = true;
      const host = p.host;
      let address: string | null = null;
      let error: string | null = null;
      let timer: NodeJS.Timeout | undefined;
      try {
        const answers = await Promise.race([
          lookupAll(host),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
        ]);
        address = chooseAddress(answers, usable());
        if (address === null) error = `no usable address (${answers.map((a) => a.address).join(', ') || 'none'})`;
      } catch (e) {
        error = String((e as Error).message ?? e).slice(0, 512);
      } finally {
        clearTimeout(timer);
        p.busy = false;
      }
      if (stopped) return;
      sendBack({ type: 'RESOLVED', peerId, host, address, error } satisfies ResolvedEvent);
      const now = peers.get(peerId);
      // Still the same host: next lookup on the timer (sooner after a failure); a new host: at once.
      if (now !== p) return;
      if (now.host !== host) return schedule(peerId, 0);
      now.failures = address === null ? now.failures + 1 : 0;
      schedule(peerId, address === null ? Math.min(o.intervalMs, retryBaseMs * 2 ** Math.min(now.failures - 1, 20)) : o.intervalMs);
    };

    receive((e) => {
      if (e.type !== 'TARGETS') return;
      const wanted = new Map(e.targets.map((t) => [t.peerId, t.host]));
      for (const [id, p] of peers) {
        if (wanted.has(id)) continue;
        if (p.timer) clearTimeout(p.timer);
        peers.delete(id);
      }
      for (const [id, host] of wanted) {
        const p = peers.get(id);
        if (p && p.host === host) continue;
        if (p) {
          p.host = host;
          p.failures = 0;
        } else {
          peers.set(id, { host, failures: 0, timer: null, busy: false });
          log.debug({ peerId: id, host }, 'resolving peer endpoint');
        }
        // A lookup in flight for the old host reschedules itself when it ends.
        if (!peers.get(id)!.busy) schedule(id, 0);
      }
    });

    return () => {
      stopped = true;
      for (const p of peers.values()) if (p.timer) clearTimeout(p.timer);
      peers.clear();
    };
  });
}
