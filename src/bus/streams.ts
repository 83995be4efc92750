import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { RELAY_SUBJECTS, STREAMS, TOPOLOGY_SUBJECTS } from '../contract/subjects.ts';
import { DEFAULT_STREAM_LIMITS, type StreamLimits } from './stream-limits.ts';

export { DEFAULT_STREAM_LIMITS, type StreamLimits };

const NS_PER_S = 1_000_000_000;

/** The desired configuration of both streams. Pure. */
export function streamConfigs(l: StreamLimits = DEFAULT_STREAM_LIMITS): (Partial<StreamConfig> & { name: string })[] {
  const common = {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    num_replicas: l.replicas,
    max_msg_size: 1024 * 1024,
    duplicate_window: l.duplicateWindowSeconds * NS_PER_S,
  };
  return [
    { ...common, name: STREAMS.topology, subjects: [TOPOLOGY_SUBJECTS], max_age: l.topologyMaxAgeSeconds * NS_PER_S, max_bytes: l.topologyMaxBytes },
    { ...common, name: STREAMS.relay, subjects: [RELAY_SUBJECTS], max_age: l.relayMaxAgeSeconds * NS_PER_S, max_bytes: l.relayMaxBytes },
  ];
}

/**
 * Create the streams, or update them to the desired limits. Idempotent: a second call with the same
 * limits changes nothing and reports `unchanged`. With `update: false` (the control plane at start)
 * existing streams are left as they are (`exists`): limits an operator set stay.
 */
export async function bootstrapStreams(
  jsm: JetStreamManager,
  limits: StreamLimits = DEFAULT_STREAM_LIMITS,
  opts: { update?: boolean } = {},
): Promise<Record<string, 'created' | 'updated' | 'unchanged' | 'exists'>> {
  const out: Record<string, 'created' | 'updated' | 'unchanged' | 'exists'> = {};
  for (const cfg of streamConfigs(limits)) {
    const name = cfg.name;
    let existing: StreamConfig | null = null;
    try {
      existing = (await jsm.streams.info(name)).config;
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    if (!existing) {
      try {
        await jsm.streams.add(cfg);
        out[name] = 'created';
        continue;
      } catch (e) {
        // Another bootstrapper won the race; fall through to compare.
        if (!/already in use|exists/i.test(String((e as Error).message))) throw e;
        existing = (await jsm.streams.info(name)).config;
      }
    }
    if (opts.update === false) {
      out[name] = 'exists';
      continue;
    }
    const differs = (Object.keys(cfg) as (keyof StreamConfig)[]).some((k) => JSON.stringify(existing![k]) !== JSON.stringify(cfg[k]));
    if (differs) {
      await jsm.streams.update(name, cfg);
      out[name] = 'updated';
    } else {
      out[name] = 'unchanged';
    }
  }
  return out;
}

/** A JetStream API error saying the stream itself does not exist (10059), not just a consumer of it. */
export function isStreamNotFound(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string };
  return err?.api_error?.err_code === 10059 || /stream not found/i.test(String(err?.message));
}

/** A JetStream API error saying a stream or a consumer does not exist (10059, 10014). */
export function isNotFound(e: unknown): boolean {
  const err = e as { api_error?: { err_code?: number }; message?: string };
  return isStreamNotFound(e) || err?.api_error?.err_code === 10014 || /not found/i.test(String(err?.message));
}
