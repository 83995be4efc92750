/**
 * The sim's stand-in for a host on the internet: an HTTP server in the sim's "internet" namespace that
 * answers every request with the address it came from, so a client behind the relay network sees which
 * exit it leaves through. `GET /bytes/N` sends N bytes (bulk transfers; at most 1 GiB). Every request
 * is appended as a JSON line `{ time, remote, path }` to the log file, so tests can check which
 * addresses ever reached it.
 *
 *   node src/sim/whoami.ts --listen 198.18.0.1:8080 [--listen '[2001:db8:18:1::80]:8080'] --log FILE
 */
import { appendFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';

const MAX_BYTES = 1 << 30;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

const { values } = parseArgs({ options: { listen: { type: 'string', multiple: true }, log: { type: 'string' } } });
const listens = (values.listen ?? []).map((l) => /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]):(\d{1,5})$/i.exec(l));
if (listens.length === 0 || listens.some((m) => !m) || !values.log) {
  process.stderr.write('usage: whoami.ts --listen IPV4:PORT|[IPV6]:PORT [--listen ...] --log FILE\n');
  process.exit(2);
}
const logFile = values.log;

const handle = (req: IncomingMessage, res: ServerResponse) => {
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
};

// One server per address (each binds its own; a wildcard would also answer on addresses the sim did not mean).
const servers = listens.map((m) => {
  const server = createServer(handle);
  const host = m![1]!.replace(/^\[|\]$/g, '');
  server.listen(Number(m![2]), host, () => process.stderr.write(`whoami listening on ${m![0]}\n`));
  return server;
});
const stop = () => {
  let open = servers.length;
  for (const s of servers) s.close(() => --open === 0 && process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
