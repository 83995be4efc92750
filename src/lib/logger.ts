import { pino, type Logger } from 'pino';

/** Paths pino redacts wherever they appear in a log record: key material and credentials. */
export const REDACT_PATHS = [
  'privateKey',
  '*.privateKey',
  'token',
  '*.token',
  'serviceRoleKey',
  '*.serviceRoleKey',
  'jwtSecret',
  '*.jwtSecret',
  'signingKey',
  '*.signingKey',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'bus.token',
];

/** The one root logger of a process: JSON lines on stderr (fd 2), key material redacted. */
export function rootLogger(bindings: Record<string, unknown> = {}, level = process.env.RELAYNET_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, pino.destination(2));
}

export type { Logger };
