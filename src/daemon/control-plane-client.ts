import { createClient, FunctionsFetchError, FunctionsHttpError, FunctionsRelayError } from '@supabase/supabase-js';
import type { z } from 'zod';
import {
  ConnectClientResponseSchema,
  DisconnectClientResponseSchema,
  ListClientsResponseSchema,
  SwitchExitResponseSchema,
  type ConnectClientRequest,
  type ConnectClientResponse,
  type DisconnectClientRequest,
  type DisconnectClientResponse,
  type ListClientsRequest,
  type ListClientsResponse,
  type SwitchExitRequest,
  type SwitchExitResponse,
} from '../contract/api-clients.ts';
import {
  BanResponseSchema,
  type BanRequest,
  type BanResponse,
  ClientReadyResponseSchema,
  DeregisterResponseSchema,
  RevokeTokenResponseSchema,
  type RevokeTokenRequest,
  type RevokeTokenResponse,
  HeartbeatResponseSchema,
  RegisterResponseSchema,
  type ClientReadyResponse,
  type HeartbeatResponse,
  type DeregisterResponse,
  type RegisterRequest,
  type RegisterResponse,
} from '../contract/api-relays.ts';
import {
  PobReportResponseSchema,
  SettleEpochResponseSchema,
  SubmitReceiptsResponseSchema,
  type SettleEpochRequest,
  type SettleEpochResponse,
  type PobReportRequest,
  type PobReportResponse,
  type SubmitReceiptsRequest,
  type SubmitReceiptsResponse,
  PobStatusResponseSchema,
  ScheduleMeasurementResponseSchema,
  SubmitMeasurementResponseSchema,
  type PobStatusRequest,
  type PobStatusResponse,
  type ScheduleMeasurementRequest,
  type ScheduleMeasurementResponse,
  type SubmitMeasurementRequest,
  type SubmitMeasurementResponse,
} from '../contract/api-pob.ts';
import type { Logger } from '../lib/logger.ts';
import {
  EnrollRelayResponseSchema,
  SetRelayStateResponseSchema,
  type EnrollRelayRequest,
  type EnrollRelayResponse,
  type SetRelayStateRequest,
  type SetRelayStateResponse,
} from '../contract/api-community.ts';

/** connect-client and switch-exit wait for the entry relay (up to confirm_timeout_seconds): never re-POSTed. */
export const ONCE: RetryPolicy = { attempts: 1, baseMs: 0, maxMs: 0 };

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
  /** A 429's `Retry-After`, in milliseconds: the next attempt waits at least this long. */
  readonly retryAfterMs: number | null;
  constructor(
    kind: ControlPlaneError['kind'],
    message: string,
    extra: { status?: number | null; code?: string | null; field?: string | null; retryAfterMs?: number | null } = {},
  ) {
    super(message);
    this.name = 'ControlPlaneError';
    this.kind = kind;
    this.status = extra.status ?? null;
    this.code = extra.code ?? null;
    this.field = extra.field ?? null;
    this.retryAfterMs = extra.retryAfterMs ?? null;
  }
}

export interface RetryPolicy {
  /** Attempts in all, including the first. `Infinity` retries until aborted. */
  attempts: number;
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseMs: 250, maxMs: 5_000 };

/** The longest `Retry-After` a relay honours; a longer one waits this long and asks again. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** `Retry-After` seconds (a 429's header) in milliseconds, capped; null when absent or not a number of seconds. Pure. */
export function retryAfterMs(header: string | null): number | null {
  if (header === null || !/^\d{1,6}$/.test(header.trim())) return null;
  return Math.min(Number(header.trim()) * 1000, MAX_RETRY_AFTER_MS);
}

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

  /**
   * register-server. `req` may be a function that builds the request for each attempt: a signed
   * registration is signed again for every retry, so a proof is never older than one attempt.
   */
  register(req: RegisterRequest | (() => Promise<RegisterRequest>), signal?: AbortSignal): Promise<RegisterResponse> {
    return this.#call('register-server', req, RegisterResponseSchema, signal);
  }

  /** `renewBus`: ask for a fresh NATS user JWT (in the answer's `bus`). */
  heartbeat(relayId: string, signal?: AbortSignal, renewBus = false): Promise<HeartbeatResponse> {
    return this.#call('heartbeat', renewBus ? { relayId, renewBus } : { relayId }, HeartbeatResponseSchema, signal, { attempts: 2, baseMs: 250, maxMs: 1_000 });
  }

  /** The operator bans a relay or lifts its ban (service role). One attempt: the answer says whether it changed anything. */
  banRelay(req: BanRequest, signal?: AbortSignal): Promise<BanResponse> {
    return this.#call('ban-relay', req, BanResponseSchema, signal, { attempts: 1, baseMs: 0, maxMs: 0 });
  }

  /** The operator revokes one relay token by its jti (service role). One attempt. */
  revokeToken(req: RevokeTokenRequest, signal?: AbortSignal): Promise<RevokeTokenResponse> {
    return this.#call('revoke-token', req, RevokeTokenResponseSchema, signal, { attempts: 1, baseMs: 0, maxMs: 0 });
  }

  deregister(relayId: string, signal?: AbortSignal): Promise<DeregisterResponse> {
    return this.#call('deregister', { relayId }, DeregisterResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  /** The entry relay confirms it programmed a session and steers it to `exitId` (idempotent, so retried). */
  clientReady(relayId: string, sessionId: string, exitId: string, signal?: AbortSignal): Promise<ClientReadyResponse> {
    return this.#call('client-ready', { relayId, sessionId, exitId }, ClientReadyResponseSchema, signal, { attempts: 4, baseMs: 250, maxMs: 2_000 });
  }

  /**
   * Open a client session; resolves once the entry relay has programmed it, with the client's
   * configuration. Takes up to the control plane's confirm_timeout_seconds (504 entry_not_ready after
   * it; nothing is kept then). One attempt: a connect is never re-sent automatically.
   */
  connectClient(req: ConnectClientRequest, signal?: AbortSignal): Promise<ConnectClientResponse> {
    return this.#call('connect-client', req, ConnectClientResponseSchema, signal, ONCE);
  }

  /** Steer a session to another exit; resolves once the entry confirmed it. One attempt. */
  switchExit(req: SwitchExitRequest, signal?: AbortSignal): Promise<SwitchExitResponse> {
    return this.#call('switch-exit', req, SwitchExitResponseSchema, signal, ONCE);
  }

  disconnectClient(req: DisconnectClientRequest, signal?: AbortSignal): Promise<DisconnectClientResponse> {
    return this.#call('disconnect-client', req, DisconnectClientResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  listClients(req: ListClientsRequest = {}, signal?: AbortSignal): Promise<ListClientsResponse> {
    return this.#call('list-clients', req, ListClientsResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  /** Hand in an epoch's Proof-of-Bandwidth receipts (idempotent: a retry of the same root stores nothing). */
  submitReceipts(req: SubmitReceiptsRequest, signal?: AbortSignal): Promise<SubmitReceiptsResponse> {
    return this.#call('submit-receipts', req, SubmitReceiptsResponseSchema, signal, { attempts: 3, baseMs: 500, maxMs: 4_000 });
  }

  /** An epoch's signed roots and one relay's receipts (pob-report). */
  pobReport(req: PobReportRequest, signal?: AbortSignal): Promise<PobReportResponse> {
    return this.#call('pob-report', req, PobReportResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  /** Settle a closed epoch (settle-epoch, service role): credits and disputes. */
  settleEpoch(req: SettleEpochRequest, signal?: AbortSignal): Promise<SettleEpochResponse> {
    return this.#call('settle-epoch', req, SettleEpochResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  /** Have a relay's capacity measured (schedule-measurement, service role); not retried (each call schedules one). */
  scheduleMeasurement(req: ScheduleMeasurementRequest, signal?: AbortSignal): Promise<ScheduleMeasurementResponse> {
    return this.#call('schedule-measurement', req, ScheduleMeasurementResponseSchema, signal, ONCE);
  }

  /** Hand in a party's signed counts of a measurement (idempotent: the same report again stores nothing). */
  submitMeasurement(req: SubmitMeasurementRequest, signal?: AbortSignal): Promise<SubmitMeasurementResponse> {
    return this.#call('submit-measurement', req, SubmitMeasurementResponseSchema, signal, { attempts: 4, baseMs: 500, maxMs: 4_000 });
  }

  /** Capacity, measurements, credit and disputes per relay (pob-status, service role). */
  pobStatus(req: PobStatusRequest = {}, signal?: AbortSignal): Promise<PobStatusResponse> {
    return this.#call('pob-status', req, PobStatusResponseSchema, signal, { attempts: 3, baseMs: 250, maxMs: 1_000 });
  }

  /** An operator enrolls a community relay and gets its relay token (an operator's user token). One attempt: each mints a token. */
  enrollRelay(req: EnrollRelayRequest, signal?: AbortSignal): Promise<EnrollRelayResponse> {
    return this.#call('enroll-relay', req, EnrollRelayResponseSchema, signal, ONCE);
  }

  /** The network's operator suspends or resumes a relay (service role). One attempt. */
  setRelayState(req: SetRelayStateRequest, signal?: AbortSignal): Promise<SetRelayStateResponse> {
    return this.#call('set-relay-state', req, SetRelayStateResponseSchema, signal, ONCE);
  }

  /** `body`: the request, or a function building it afresh for each attempt. */
  async #call<T>(fn: string, body: unknown, schema: z.ZodType<T>, signal?: AbortSignal, retry: RetryPolicy = this.#retry): Promise<T> {
    let last: ControlPlaneError | null = null;
    for (let attempt = 0; attempt < retry.attempts; attempt++) {
      if (signal?.aborted) throw new ControlPlaneError('unreachable', `${fn}: aborted`);
      try {
        return await this.#once(fn, typeof body === 'function' ? await (body as () => Promise<unknown>)() : body, schema);
      } catch (e) {
        if (!(e instanceof ControlPlaneError)) throw e;
        if (e.kind !== 'unreachable') throw e;
        last = e;
        if (attempt + 1 >= retry.attempts) break;
        // A rate-limited call waits as long as the control plane asks (the attempt count still bounds it).
        const delay = Math.max(backoffDelay(attempt, retry), e.retryAfterMs ?? 0);
        this.#log.warn(
          { fn, attempt: attempt + 1, delayMs: delay, err: e.message },
          e.status === 429 ? 'rate limited by the control plane, retrying' : 'control plane unreachable, retrying',
        );
        await sleep(delay, signal);
      }
    }
    // A single attempt reports the answer as it was (e.g. 504 entry_not_ready and its message).
    if (retry.attempts <= 1 && last) throw last;
    throw new ControlPlaneError('unreachable', `control plane at ${this.url} unreachable after ${retry.attempts} attempts: ${last?.message}`, {
      status: last?.status ?? null,
      code: last?.code ?? null,
      field: last?.field ?? null,
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
          const wait = status === 429 ? retryAfterMs(res.headers.get('retry-after')) : null;
          return Promise.reject(
            new ControlPlaneError('unreachable', msg, { status, code: payload.error ?? null, field: payload.field ?? null, retryAfterMs: wait }),
          );
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
