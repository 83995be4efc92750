/**
 * Publish raw bytes to JetStream and print the stream sequence: how tests put corrupt or forged
 * messages into a sim's streams (run inside the sim's namespace). Usage: publish-raw.ts URL SUBJECT
 * BASE64 [SIGNATURE] (SIGNATURE: the Relaynet-Signature header to send).
 */
import { jetstream } from '@nats-io/jetstream';
import { connect, headers } from '@nats-io/transport-node';

const [url, subject, b64, signature] = process.argv.slice(2);
if (!url || !subject || b64 === undefined) throw new Error('usage: publish-raw.ts URL SUBJECT BASE64 [SIGNATURE]');
const nc = await connect({ servers: url });
const h = headers();
if (signature) h.set('Relaynet-Signature', signature);
const ack = await jetstream(nc).publish(subject, Buffer.from(b64, 'base64'), { headers: h });
console.log(ack.seq);
await nc.close();
