import { createClient, FunctionsFetchError, FunctionsHttpError, FunctionsRelayError } from '@supabase/supabase-js';
import { z } from 'zod';
import { RelayRecordSchema } from '../events/topology.events.ts';
import type { Logger } from '../lib/logger.ts';

/** The bus details `register-server` hands a relay. */
export const BusDetailsSchema = z.object({
  servers: z.array(z.string().min(1)).min(1),
  token: z.string().nullable(),
  subjectRoot: z.string(),
  topologyStream: z.string(),
  relayStream: z.string(),
  topologySigningKey: z.string(),
});
export type BusDetails = z.infer<typeof BusDetailsSchema>;

export const RegisterResponseSchema = z.object({
  relay: RelayRecordSchema,
  readmitted: z.boolean(),
  revision: z.number().int().min(0),
  revisionTime: z.string(),
  relays: z.array(RelayRecordSchema),
  bus: BusDetailsSchema,
  heartbeatIntervalSeconds: z.number().positive(),
});
export type RegisterResponse = z.infer<typeof RegisterResponseSchema>;

export const HeartbeatResponseSchema = z.object({ revision: z.number().int().min(0), revisionTime: z.string(), status: z.literal('active') });
export type HeartbeatResponse = z.infer<typeof HeartbeatResponseSchema>;

export const DeregisterResponseSchema = z.object({ revision: z.number().int().min(0) });

export interface RegisterRequest {
  relayId: string;
  name: string;
  region: string;
  publicKey: string;
  endpoint: string;
  rotateKey?: boolean;
}

/**
 * Why a control-plane call failed. `unreachable`: no answer (network, 5xx, gateway); retried.
 * `refused`: a 4xx answer with the control plane's reason; not retried. `invalid-response`: an answer
 * that does not match the contract.
 */
export class ControlPlaneError extends Error {
  readonly kind: 'unreachable' | 'refused' | 'invalid-response';
  readonly status: number | null;
  readonly code: string | null;
  readonly field: string | null;
  constructor(kind: ControlPlaneError['kind'], message: string, extra: { status?: number | null; code?: string | null; field?: string | null } = {}) {
    super(message);
    this.name = 'ControlPlaneError';
    this.kind = kind;
    this.status = extra.status ?? null;
    this.code = extra.code ?? null;
    this.field = extra.field ?? null;
  }
}

export interface RetryPolicy {
  /** Attempts in all, including the first. `Infinity` retries until aborted. */
  attempts: number;
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseMs: 250, maxMs: 5_000 };

/** Exponential backoff with full jitter; `random` is injected for tests. Pure. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * The relay's only way to the control plane: Supabase Edge Functions through `@supabase/supabase-js`
 * (`functions.invoke`), with retries and backoff for `unreachable` failures.
 */
export class ControlPlaneClient {
  readonly #client;
  readonly #log: Logger;
  readonly #retry: RetryPolicy;
  readonly url: string;

  constructor(opts: { url: string; key: string; logger: Logger; retry?: RetryPolicy }) {
    this.url = opts.url;
    this.#client = createClient(opts.url, opts.key, {
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    });
    this.#log = opts.logger;
    this.#retry = opts.retry ?? DEFAULT_RETRY;
  }

  register(req: RegisterRequest, signal?: AbortSignal): Promise<RegisterResponse> {
    return this.#call('register-server', req, RegisterResponseSchema, signal);
  }

  heartbeat(relayId: string, signal?: AbortSignal): Promise<HeartbeatResponse> {
    return this.#call('heartbeat', { relayId }, HeartbeatResponseSchema, signal, { attempts: 2, baseMs: 250, maxMs: 1_000 });
  }

  deregister(relayId: string, signal?: AbortSignal): Promise<{ revision: number }> {
    return this.#call('deregister', { relayId }, DeregisterResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  async #call<T>(fn: string, body: unknown, schema: z.ZodType<T>, signal?: AbortSignal, retry: RetryPolicy = this.#retry): Promise<T> {
    let last: ControlPlaneError | null = null;
    for (let attempt = 0; attempt < retry.attempts; attempt++) {
      if (signal?.aborted) throw new ControlPlaneError('unreachable', `${fn}: aborted`);
      try {
        return await this.#once(fn, body, schema);
      } catch (e) {
        if (!(e instanceof ControlPlaneError)) throw e;
        if (e.kind !== 'unreachable') throw e;
        last = e;
        if (attempt + 1 >= retry.attempts) break;
        const delay = backoffDelay(attempt, retry);
        this.#log.warn({ fn, attempt: attempt + 1, delayMs: delay, err: e.message }, 'control plane unreachable, retrying');
        await sleep(delay, signal);
      }
    }
    throw new ControlPlaneError('unreachable', `control plane at ${this.url} unreachable after ${retry.attempts} attempts: ${last?.message}`, {
      status: last?.status ?? null,
    });
  }

  async #once<T>(fn: string, body: unknown, schema: z.ZodType<T>): Promise<T> {
    const { data, error } = await this.#client.functions.invoke(fn, { body: body as Record<string, unknown>, method: 'POST' });
    if (error) {
      if (error instanceof FunctionsHttpError) {
        const res = error.context as Response;
        let payload: { error?: string; message?: string; field?: string } = {};
        try {
          payload = (await res.json()) as typeof payload;
        } catch {
          /* not JSON */
        }
        const status = res.status;
        const msg = `${fn}: ${status} ${payload.error ?? ''}${payload.field ? ` (${payload.field})` : ''}: ${payload.message ?? res.statusText}`;
        if (status >= 500 || status === 429 || status === 408) {
          return Promise.reject(new ControlPlaneError('unreachable', msg, { status, code: payload.error ?? null }));
        }
        throw new ControlPlaneError('refused', msg, { status, code: payload.error ?? null, field: payload.field ?? null });
      }
      if (error instanceof FunctionsFetchError || error instanceof FunctionsRelayError) {
        const cause = (error.context as { message?: string; cause?: { code?: string } } | undefined) ?? {};
        throw new ControlPlaneError('unreachable', `${fn}: ${cause.cause?.code ?? cause.message ?? error.message}`);
      }
      throw new ControlPlaneError('unreachable', `${fn}: ${String((error as Error).message ?? error)}`);
    }
    const parsed = schema.safeParse(data);
    if (!parsed.success) throw new ControlPlaneError('invalid-response', `${fn}: answer does not match the contract: ${parsed.error.message.slice(0, 300)}`);
    return parsed.data;
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}
