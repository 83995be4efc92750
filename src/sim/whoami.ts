/**
 * The sim's stand-in for a host on the internet: an HTTP server in the sim's "internet" namespace that
 * answers every request with the address it came from, so a client behind the relay network sees which
 * exit it leaves through. `GET /bytes/N` sends N bytes (bulk transfers; at most 1 GiB). Every request
 * is appended as a JSON line `{ time, remote, path }` to the log file, so tests can check which
 * addresses ever reached it.
 *
 *   node src/sim/whoami.ts --listen 198.18.0.1:8080 --log FILE
 */
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const MAX_BYTES = 1 << 30;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

const { values } = parseArgs({ options: { listen: { type: 'string' }, log: { type: 'string' } } });
const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(values.listen ?? '');
if (!m || !values.log) {
  process.stderr.write('usage: whoami.ts --listen IPV4:PORT --log FILE\n');
  process.exit(2);
}
const logFile = values.log;

const server = createServer((req, res) => {
  const remote = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
  appendFileSync(logFile, JSON.stringify({ time: new Date().toISOString(), remote, path: req.url }) + '\n');
  const bytes = /^\/bytes\/(\d{1,10})$/.exec(req.url ?? '');
  if (bytes) {
    let left = Number(bytes[1]);
    if (left > MAX_BYTES) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end(`at most ${MAX_BYTES} bytes\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`${remote}\n`);
});
server.listen(Number(m[2]), m[1], () => process.stderr.write(`whoami listening on ${values.listen}\n`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
