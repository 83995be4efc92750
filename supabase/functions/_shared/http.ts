// HTTP helpers every Edge Function shares. Web APIs only (Request, Response, streams) and the
// contract, no remote imports, so Node's unit tests import this file as it is.
import type { z } from 'zod';
import { checkRequest } from '../../../src/contract/request.ts';

/**
 * An error the caller sees as JSON `{ error, message, field?, ...details }` with an HTTP status and
 * extra response headers (a 429's Retry-After) (docs/control-plane.md).
 */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  readonly headers: Record<string, string>;
  readonly details: Record<string, unknown>;
  constructor(
    status: number,
    code: string,
    message: string,
    field?: string,
    extra: { headers?: Record<string, string>; details?: Record<string, unknown> } = {},
  ) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.headers = extra.headers ?? {};
    this.details = extra.details ?? {};
  }
}

/** 400 `invalid_request` naming the offending field. */
export function badRequest(field: string, message: string): HttpError {
  return new HttpError(400, 'invalid_request', message, field);
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

export function errorBody(e: HttpError): { error: string; message: string; field?: string } & Record<string, unknown> {
  return { ...e.details, error: e.code, message: e.message, ...(e.field !== undefined ? { field: e.field } : {}) };
}

export function errorResponse(e: HttpError): Response {
  return json(e.status, errorBody(e), e.headers);
}

/** Largest request body a function accepts (bytes). */
export const MAX_BODY_BYTES = 16 * 1024;

const tooBig = (n: number | string, limit: number) => badRequest('body', `body is ${n} bytes; the limit is ${limit}`);

/**
 * Read the body as bytes, refusing more than `limit` bytes without reading the rest (a declared
 * Content-Length over the limit is refused before reading anything). 400 naming `body`.
 */
export async function readBodyBytes(req: Request, limit = MAX_BODY_BYTES): Promise<Uint8Array> {
  const declared = req.headers.get('content-length');
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > limit) throw tooBig(declared, limit);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw badRequest('body', `body is more than ${limit} bytes; the limit is ${limit}`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Parse bytes as a UTF-8 JSON object; 400 naming `body` for anything else. */
export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw badRequest('body', `body is not valid UTF-8 JSON: ${String((e as Error).message ?? e).slice(0, 120)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest('body', 'body must be a JSON object');
  return value as Record<string, unknown>;
}

/** Read a JSON object body of at most `limit` bytes (MAX_BODY_BYTES unless a function says otherwise). */
export async function readJsonBody(req: Request, limit = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  return parseJsonObject(await readBodyBytes(req, limit));
}

/** A request body as `schema` (the contract's) takes it; else 400 invalid_request naming the field, as the functions always have. */
export function parseRequest<S extends z.ZodObject>(schema: S, body: Record<string, unknown>): z.output<S> {
  const r = checkRequest(schema, body);
  if (!r.ok) throw badRequest(r.field, r.message);
  return r.value;
}
