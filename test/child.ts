// A CLI run as a child process the test can signal: its output so far, a wait for a line, its exit.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../bin/kvm-memmodel.js', import.meta.url));

export interface Child {
  readonly proc: ChildProcess;
  readonly out: () => string;
  readonly err: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stdout matches, rejects after `ms`. */
  readonly waitFor: (re: RegExp, ms?: number) => Promise<void>;
}

export function startCli(args: readonly string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => {
    out += String(d);
  });
  proc.stderr!.on('data', (d) => {
    err += String(d);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const waitFor = async (re: RegExp, ms = 60_000): Promise<void> => {
    const until = Date.now() + ms;
    while (!re.test(out)) {
      if (Date.now() > until) throw new Error(`timed out waiting for ${re} in: ${out.slice(-400)} ${err.slice(-400)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { proc, out: () => out, err: () => err, exited, waitFor };
}

/** The pids of a process's children (the kvm helper of a CLI run), from /proc. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Polls for the serving kvm helper of CLI process `pid`: a child running kvm-helper with FIFO arguments. */
export async function waitForHelper(pid: number, ms = 30_000): Promise<number> {
  const until = Date.now() + ms;
  for (;;) {
    for (const c of childPids(pid)) {
      try {
        const argv = readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0');
        if (argv[0]?.endsWith('kvm-helper') && argv[1]?.includes('kvm-memmodel-')) return c;
      } catch {
        /* gone already */
      }
    }
    if (Date.now() > until) throw new Error(`no kvm helper child of ${pid} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
};
