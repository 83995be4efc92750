import type { KeyObject } from 'node:crypto';
import type { AnyEvent } from '../contract/catalogue.ts';
import { importPublicKey, verifyBytes } from './signing.ts';
import { SIGNATURE_HEADER } from './wire.ts';

/**
 * Which identity key may have signed a relay's event, and whether it did. Pure: the registry is fed the
 * verified topology events a reader has seen, or keys an operator pinned; nothing here reads NATS or files.
 *
 * A relay's key is the identity key the control plane announced for it (`RelayAdmitted` v2,
 * `identityKey`) in the topology stream, the one in force when the relay-stream message was stored:
 * the latest announced at or before that server time. The first announcement also covers earlier
 * messages (a relay publishes `RelayStarted` before its admission reaches the stream), and a key
 * announced up to {@link ANNOUNCEMENT_GRACE_MS} after a message also verifies it (the same race at a
 * re-registration with a new identity). A key pinned for a relay (`--relay-key ID=KEY`) replaces what
 * the topology stream says about that relay.
 */

/** How long after a relay message an announcement of a new identity key still covers it. */
export const ANNOUNCEMENT_GRACE_MS = 60_000;

export type RelayVerdict = { ok: true; key: string } | { ok: false; reason: 'unsigned' | 'unknown-key' | 'bad-signature'; detail: string };

interface Announcement {
  key: string;
  /** Server time of the topology message, ms. */
  at: number;
  seq: number;
}

export class RelayKeyRegistry {
  readonly #announced = new Map<string, Announcement[]>();
  readonly #pinned = new Map<string, string>();
  readonly #keys = new Map<string, KeyObject>();
  readonly #seen = new Set<number>();

  /** `pinned`: relay id → base64 identity public key; throws on a malformed key. */
  constructor(pinned: Readonly<Record<string, string>> = {}) {
    for (const [id, key] of Object.entries(pinned)) {
      this.#key(key);
      this.#pinned.set(id, key);
    }
  }

  /**
   * Learn from a topology event that has been verified (signed by the control plane) or that the
   * caller chose to trust. Idempotent by topology-stream sequence, so a reader may offer a message twice.
   */
  observe(seq: number, time: string, event: AnyEvent): void {
    if (event.type !== 'RelayAdmitted' || this.#seen.has(seq)) return;
    this.#seen.add(seq);
    const key = event.data.identityKey;
    if (key === null) return;
    const list = this.#announced.get(event.data.relay.id) ?? [];
    list.push({ key, at: Date.parse(time), seq });
    list.sort((a, b) => a.at - b.at || a.seq - b.seq);
    this.#announced.set(event.data.relay.id, list);
  }

  /** The keys that may verify a message of `relayId` stored at `time` (ISO), in the order to try them. */
  candidates(relayId: string, time: string): string[] {
    const pinned = this.#pinned.get(relayId);
    if (pinned !== undefined) return [pinned];
    const list = this.#announced.get(relayId);
    if (!list?.length) return [];
    const t = Date.parse(time);
    let i = -1;
    for (let j = 0; j < list.length; j++) if (list[j]!.at <= t) i = j;
    const out: string[] = [list[Math.max(i, 0)]!.key];
    const next = list[i + 1];
    if (i >= 0 && next && next.at - t <= ANNOUNCEMENT_GRACE_MS && next.key !== out[0]) out.push(next.key);
    return out;
  }

  /** Whether any key is known for `relayId` (announced or pinned). */
  knows(relayId: string): boolean {
    return this.#pinned.has(relayId) || (this.#announced.get(relayId)?.length ?? 0) > 0;
  }

  /** Verify a relay-stream message of `relayId` stored at `time`: its exact bytes and signature header. */
  verify(relayId: string, time: string, data: Uint8Array, signature: string | null): RelayVerdict {
    if (!signature) return { ok: false, reason: 'unsigned', detail: `no ${SIGNATURE_HEADER} header` };
    const keys = this.candidates(relayId, time);
    if (keys.length === 0) {
      return { ok: false, reason: 'unknown-key', detail: `no identity key of ${relayId} is announced in the topology stream or pinned` };
    }
    for (const k of keys) if (verifyBytes(this.#key(k), data, signature)) return { ok: true, key: k };
    return {
      ok: false,
      reason: 'bad-signature',
      detail: `Ed25519 signature does not verify with the identity key of ${relayId}${this.#pinned.has(relayId) ? ' (pinned)' : ''}`,
    };
  }

  #key(b64: string): KeyObject {
    let k = this.#keys.get(b64);
    if (!k) {
      k = importPublicKey(b64);
      this.#keys.set(b64, k);
    }
    return k;
  }
}

/** Parse `--relay-key ID=KEY` values into pins; an error names the bad one. */
export function parseRelayKeyPins(values: readonly string[]): { ok: true; pins: Record<string, string> } | { ok: false; error: string } {
  const pins: Record<string, string> = {};
  for (const v of values) {
    const m = /^([a-z0-9][a-z0-9-]{0,62})=([A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)$/.exec(v);
    if (!m) return { ok: false, error: `--relay-key ${JSON.stringify(v.slice(0, 100))}: give RELAY-ID=KEY, KEY the base64 of a 32-byte Ed25519 public key` };
    if (pins[m[1]!] !== undefined && pins[m[1]!] !== m[2]) return { ok: false, error: `--relay-key: two keys for ${m[1]}` };
    pins[m[1]!] = m[2]!;
  }
  return { ok: true, pins };
}
