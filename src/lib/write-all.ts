import { writeSync } from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Write all of `text` to `fd`, synchronously and in order. A pipe may be in non-blocking mode (a
 * parent Node process that opened its stdout shares the pipe with the children it spawns with
 * inherited stdio), so a full pipe answers EAGAIN: wait a moment and go on instead of failing.
 * Other errors (EPIPE: the reader is gone) are thrown.
 */
export function writeAllSync(fd: number, text: string): void {
  const buf = Buffer.from(text);
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 2);
    }
  }
}
