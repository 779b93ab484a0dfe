// The one way a file named by the user is read (replay files, platform profiles): it never blocks
// (O_NONBLOCK, so a FIFO with no writer does not hang), reads regular files only (not /dev/zero, a
// directory or a socket), and at most MAX_INPUT_BYTES (a 50 MB file is refused, not slurped).
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { errnoWords, InputError } from './errors.js';
import { resolve } from 'node:path';
import { escapeText } from './escape.js';

/** Input files are small JSON documents: the largest replay or profile is a few KiB. */
export const MAX_INPUT_BYTES = 4 * 1024 * 1024;

const openError = (what: string, file: string, code: string | undefined): InputError =>
  new InputError(`cannot read ${what} ${escapeText(file)}: ${code === 'ENOENT' ? 'no such file' : errnoWords(code)}`);

/** Kernel pseudo-files are never inputs, and some (/proc/kmsg) block even when they look regular. */
const PSEUDO_ROOTS = ['/proc/', '/sys/'];

/** The file's text (UTF-8), or an InputError naming `what` ("replay file") when it is not a small regular file. */
export function readBoundedText(file: string, what: string, maxBytes = MAX_INPUT_BYTES): string {
  if (file === '') throw new InputError(`${what}: the path is empty`);
  if (file.includes('\0'))
    throw new InputError(`cannot read ${what} ${escapeText(file)}: the path contains a NUL byte`);
  if (PSEUDO_ROOTS.some((r) => `${resolve(file)}/`.startsWith(r)))
    throw new InputError(`cannot read ${what} ${escapeText(file)}: a kernel pseudo-file, not an input file`);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw openError(what, file, (e as NodeJS.ErrnoException).code);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new InputError(`cannot read ${what} ${escapeText(file)}: is a directory`);
    if (!st.isFile()) throw new InputError(`cannot read ${what} ${escapeText(file)}: not a regular file`);
    if (st.size > maxBytes)
      throw new InputError(`${what} ${escapeText(file)} is too large (${st.size} bytes; at most ${maxBytes})`);
    // Read one byte past the cap: a file growing while we read is refused too.
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n > maxBytes) throw new InputError(`${what} ${escapeText(file)} is too large (at most ${maxBytes} bytes)`);
    }
    return buf.subarray(0, n).toString('utf8');
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw openError(what, file, (e as NodeJS.ErrnoException).code);
  } finally {
    closeSync(fd);
  }
}
