// Where the CLI may write: checked before any work starts, so a bad --replay-dir or --c costs no
// campaign and nothing is written anywhere but the path the user named. Files are written
// atomically (a temp file in the same directory, fsync, rename): a reader never sees half a file
// and an interrupted write leaves no partial one.
import {
  accessSync,
  closeSync,
  lstatSync,
  realpathSync,
  constants,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { errnoWords, InputError } from './errors.js';
import { escapeText } from './escape.js';

/** Kernel pseudo-filesystems: writing there is never a user's file (and /proc reads can hang). */
const PSEUDO_ROOTS = ['/proc', '/sys', '/dev'];

const isUnder = (path: string, root: string): boolean => path === root || path.startsWith(`${root}/`);

function statOrNull(path: string, what: string): ReturnType<typeof statSync> | null {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new InputError(`${what} ${escapeText(path)}: ${errnoWords(code)}`);
  }
}

function lstatOrNull(path: string): ReturnType<typeof lstatSync> | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/** Whether two paths name the same existing file (export --c over its own replay file). */
export function sameFile(a: string, b: string): boolean {
  try {
    const [x, y] = [statSync(a), statSync(b)];
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

function checkWritableDir(dir: string, what: string): void {
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new InputError(`${what} ${escapeText(dir)}: directory is not writable`);
  }
}

/** The nearest existing ancestor of a path that does not exist yet must be a writable directory. */
function checkCreatable(path: string, what: string): void {
  let parent = dirname(path);
  for (;;) {
    const st = statOrNull(parent, what);
    if (st) {
      if (!st.isDirectory())
        throw new InputError(`${what} ${escapeText(path)}: ${escapeText(parent)} is not a directory`);
      checkWritableDir(parent, what);
      return;
    }
    parent = dirname(parent);
  }
}

/**
 * The path with the symlinks of its nearest existing ancestor resolved: a symlink into /proc
 * (`ln -s /proc p; --replay-dir p/x`) must be judged by where it leads, not by how it is spelt.
 */
function resolvedPath(abs: string): string {
  let existing = abs;
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(existing), ...rest.reverse());
    } catch {
      if (existing === dirname(existing)) return abs;
      rest.push(basename(existing));
      existing = dirname(existing);
    }
  }
}

/** Linux's PATH_MAX: a longer path fails in the kernel anyway, so it is refused before any work. */
const PATH_MAX = 4096;

function checkNotPseudo(path: string, what: string): string {
  if (path === '') throw new InputError(`${what}: the path is empty`);
  if (path.includes('\0')) throw new InputError(`${what} ${escapeText(path)}: the path contains a NUL byte`);
  if (path.length >= PATH_MAX)
    throw new InputError(`${what}: the path is ${path.length} bytes (at most ${PATH_MAX - 1})`);
  // `-` (stdout by convention) or a blank name is a slip, not a file the user meant to create.
  const name = basename(path);
  if (name === '-' || name.trim() === '')
    throw new InputError(`${what} "${escapeText(path)}": not a file name (did a value go missing?)`);
  const abs = resolve(path);
  const real = resolvedPath(abs);
  for (const p of [abs, real])
    if (PSEUDO_ROOTS.some((r) => isUnder(p, r)))
      throw new InputError(`${what} ${escapeText(path)}: under ${p.split('/')[1]!}, not a place for files`);
  return abs;
}

/** A directory we may create or write files in (--replay-dir); an InputError when it is not. */
export function checkOutputDir(dir: string, what: string): void {
  const abs = checkNotPseudo(dir, what);
  const st = statOrNull(abs, what);
  if (!st) {
    checkCreatable(abs, what);
    return;
  }
  if (!st.isDirectory()) throw new InputError(`${what} ${escapeText(dir)}: not a directory`);
  checkWritableDir(abs, what);
}

/** A regular file we may create or replace (export --c); an InputError when it is not. */
export function checkOutputFile(file: string, what: string): void {
  if (file.endsWith('/')) throw new InputError(`${what} ${escapeText(file)}: names a directory, not a file`);
  const abs = checkNotPseudo(file, what);
  // The file is replaced by a rename: a symlink there would be replaced, not written through, and
  // writing through it would reach a file the user did not name.
  if (lstatOrNull(abs)?.isSymbolicLink())
    throw new InputError(`${what} ${escapeText(file)}: is a symlink (name the file it points at)`);
  const st = statOrNull(abs, what);
  if (st?.isDirectory()) throw new InputError(`${what} ${escapeText(file)}: is a directory`);
  if (st && !st.isFile()) throw new InputError(`${what} ${escapeText(file)}: not a regular file`);
  const parent = dirname(abs);
  const pst = statOrNull(parent, what);
  if (!pst) throw new InputError(`${what} ${escapeText(file)}: directory ${escapeText(parent)} does not exist`);
  if (!pst.isDirectory()) throw new InputError(`${what} ${escapeText(file)}: ${escapeText(parent)} is not a directory`);
  checkWritableDir(parent, what);
}

/** Write `text` to `file` atomically, creating its directory if needed. */
export function writeFileAtomic(file: string, text: string): void {
  const dir = dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.${basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or never created: nothing to clean up
    }
    throw e;
  }
}
