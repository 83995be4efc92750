import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is src/control-plane/paths.ts). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const MIGRATIONS_DIR = join(ROOT, 'supabase/migrations');
export const FUNCTIONS_DIR = join(ROOT, 'supabase/functions');
export const DENO_BIN = process.env.RELAYNET_DENO_BIN || join(ROOT, 'node_modules/.bin/deno');
/** Where Deno keeps the functions' npm: dependencies (setup and tests pre-fetch them here). */
export const DENO_DIR = process.env.DENO_DIR || join(ROOT, '.cache/deno');
