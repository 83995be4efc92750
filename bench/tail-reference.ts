/**
 * The tail benchmark's reference: the least any NATS client does to see relay events, a core-NATS
 * subscription printing each message's event id (no JetStream consumer, no decoding, no checks).
 *
 *   node bench/tail-reference.ts NATS_URL SUBJECT CREDS_FILE     (a user allowed to subscribe to SUBJECT)
 */
import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator } from '@nats-io/transport-node';

const [url, subject, creds] = process.argv.slice(2);
const nc = await connect({ servers: url!, authenticator: credsAuthenticator(readFileSync(creds!)) });
const sub = nc.subscribe(subject!);
process.stdout.write('ready\n');
for await (const m of sub) process.stdout.write(JSON.stringify({ id: (m.json() as { id: string }).id }) + '\n');
