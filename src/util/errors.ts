// Errors every layer may raise, and errno codes in words for them. This module imports nothing of
// the project, so model/, the engine, the kvm backend and the harness can all use it.

/** A user-facing problem with input: the CLI prints `error: <message>` on one line and exits 2. */
export class InputError extends Error {}

/** A file-system errno in words, for an InputError about a path the user named. */
export function errnoWords(code: string | undefined): string {
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'ELOOP':
      return 'too many levels of symbolic links';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    case 'ENOTDIR':
      return 'a component of the path is not a directory';
    case 'ENAMETOOLONG':
      return 'the path is too long';
    case 'EIO':
      return 'input/output error';
    case 'EAGAIN':
      return 'would block';
    case 'ENOSPC':
      return 'no space left on device';
    case 'EBADF':
      return 'the file descriptor is closed';
    default:
      return code ?? 'cannot open';
  }
}
