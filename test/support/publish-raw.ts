/**
 * Publish raw bytes to JetStream and print the stream sequence: how tests put corrupt or forged
 * messages into a sim's streams (run inside the sim's namespace), with a party's credentials (the bus
 * admits nobody else). Usage: publish-raw.ts URL SUBJECT BASE64 CREDS_FILE INBOX_PREFIX [SIGNATURE]
 * (SIGNATURE: the Relaynet-Signature header to send).
 */
import { readFileSync } from 'node:fs';
import { jetstream } from '@nats-io/jetstream';
import { connect, credsAuthenticator, headers } from '@nats-io/transport-node';

const [url, subject, b64, creds, inboxPrefix, signature] = process.argv.slice(2);
if (!url || !subject || b64 === undefined || !creds || !inboxPrefix)
  throw new Error('usage: publish-raw.ts URL SUBJECT BASE64 CREDS_FILE INBOX_PREFIX [SIGNATURE]');
const nc = await connect({ servers: url.split(','), authenticator: credsAuthenticator(readFileSync(creds)), inboxPrefix });
const h = headers();
if (signature) h.set('Relaynet-Signature', signature);
const ack = await jetstream(nc).publish(subject, Buffer.from(b64, 'base64'), { headers: h });
console.log(ack.seq);
await nc.close();
