// The native helper as a long-lived child process, driven synchronously (the harness's sessions
// are synchronous): requests go down one FIFO and responses come back up another, with blocking
// reads. A helper that dies is noticed at end of file, its cause read from /proc, and a new one
// started for the next batch; the request it died on is reported by index.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  RESP_SIZE,
  decodeResponseHeader,
  encodeBatch,
  responseDataLength,
  type Request,
  type Response,
} from './protocol.js';

/** The directory holding package.json, from wherever this module runs (src/ or dist/src/). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('kvm-memmodel: cannot find the package root');
    dir = up;
  }
  return dir;
}

export const helperPath = (): string => process.env.KVM_MEMMODEL_HELPER ?? join(packageRoot(), 'build', 'kvm-helper');

/** How a helper ended, from its zombie's /proc/PID/stat (field 52, a waitpid status). */
function deathOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = Number(fields[49]);
    const signal = status & 0x7f;
    if (signal)
      return `killed by signal ${signal}${signal === 11 ? ' (SIGSEGV)' : signal === 6 ? ' (SIGABRT)' : signal === 9 ? ' (SIGKILL)' : ''}`;
    return `exited with status ${(status >> 8) & 0xff}`;
  } catch {
    return 'gone (no /proc entry)';
  }
}

export interface BatchResult {
  readonly responses: Response[];
  /** Set when the helper died: the index of the request it was running and how it ended. */
  readonly died?: { at: number; how: string; stderr: string };
}

export interface BatchOptions {
  flags?: number;
  runTimeoutMs?: number;
}

export class HelperProcess {
  private child: ChildProcess | undefined;
  private dir = '';
  private reqFd = -1;
  private respFd = -1;
  /** Helpers started after the first (one per death). */
  restarts = 0;
  private started = 0;

  constructor(readonly binary = helperPath()) {}

  private start(): void {
    this.dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-'));
    const [req, resp, err] = ['req', 'resp', 'stderr'].map((n) => join(this.dir, n)) as [string, string, string];
    execFileSync('mkfifo', [req, resp]);
    const errFd = openSync(err, 'w');
    const child = spawn(this.binary, [req, resp], { stdio: ['ignore', 'ignore', errFd] });
    closeSync(errFd);
    if (child.pid === undefined) throw new Error(`kvm-memmodel: cannot start the kvm helper ${this.binary}`);
    child.unref();
    child.on('error', () => undefined);
    this.child = child;
    // The helper opens the request FIFO first, then the response FIFO; we do the same, so
    // both opens complete (each blocks until the other side arrives).
    this.reqFd = openSync(req, 'w');
    this.respFd = openSync(resp, 'r');
    if (this.started++ > 0) this.restarts++;
  }

  private stderr(): string {
    try {
      return readFileSync(join(this.dir, 'stderr'), 'utf8').trim();
    } catch {
      return '';
    }
  }

  private readFull(length: number): Buffer | null {
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = readSync(this.respFd, buf, got, length - got, null);
      if (n === 0) return null;
      got += n;
    }
    return buf;
  }

  runBatch(requests: readonly Request[], options: BatchOptions = {}): BatchResult {
    if (!this.child) this.start();
    const out = encodeBatch(requests, options.flags ?? 0, options.runTimeoutMs ?? 2000);
    const responses: Response[] = [];
    try {
      for (let written = 0; written < out.length; ) written += writeSync(this.reqFd, out, written);
      for (let i = 0; i < requests.length; i++) {
        const header = this.readFull(RESP_SIZE);
        if (!header) return this.died(responses);
        const response = decodeResponseHeader(header);
        const length = responseDataLength(header);
        if (length) {
          const data = this.readFull(length);
          if (!data) return this.died(responses);
          response.data = data;
        }
        responses.push(response);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EPIPE') return this.died(responses);
      throw e;
    }
    return { responses };
  }

  private died(responses: Response[]): BatchResult {
    const pid = this.child?.pid ?? 0;
    // A helper that closed its pipes but still runs is killed. The kernel sets exit_code before a
    // dying task closes its files, so at end of file the zombie already says how it ended; the
    // short re-read covers a helper still on its way out (a running task reads as status 0).
    try {
      this.child?.kill('SIGKILL');
    } catch {
      /* already dead */
    }
    let how = deathOf(pid);
    for (let i = 0; i < 100 && how.startsWith('exited with status 0') && existsSync(`/proc/${pid}`); i++)
      how = deathOf(pid);
    const stderr = this.stderr();
    this.stop();
    return { responses, died: { at: responses.length, how, stderr } };
  }

  /** Close the pipes (the helper exits at end of file) and forget the process. */
  stop(): void {
    for (const fd of [this.reqFd, this.respFd]) if (fd >= 0) closeSync(fd);
    this.reqFd = this.respFd = -1;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = '';
    this.child = undefined;
  }
}

/** What this machine offers, from `kvm-helper --probe`; null fields were not reported. */
export interface MachineProbe {
  readonly usable: boolean;
  /** Why the backend cannot run here, when it cannot. */
  readonly reason?: string;
  readonly caps: ReadonlyMap<number, number>;
  readonly hugetlb1gFree: number;
  readonly userfaultfd: boolean;
}

export function probeMachine(binary = helperPath()): MachineProbe {
  const none = (reason: string): MachineProbe => ({
    usable: false,
    reason,
    caps: new Map(),
    hugetlb1gFree: 0,
    userfaultfd: false,
  });
  if (process.platform !== 'linux' || process.arch !== 'x64')
    return none(`the kvm backend drives x86_64 Linux guests; this is ${process.platform}/${process.arch}`);
  if (!existsSync('/dev/kvm')) return none('/dev/kvm does not exist on this machine');
  if (!existsSync(binary))
    return none(`the kvm helper is not built (${binary} missing: npm install builds it with gcc)`);
  const run = spawnSync(binary, ['--probe'], { encoding: 'utf8', timeout: 10_000 });
  const lines = new Map(
    (run.stdout ?? '')
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const at = l.indexOf(' ');
        return [l.slice(0, at), l.slice(at + 1)] as [string, string];
      }),
  );
  if (lines.get('dev_kvm') !== 'ok')
    return none(`/dev/kvm cannot be opened: ${lines.get('dev_kvm') ?? run.stderr ?? 'no answer from the helper'}`);
  if (lines.get('create_vm')) return none(`KVM_CREATE_VM fails: ${lines.get('create_vm')}`);
  if (lines.get('guest') !== 'ok')
    return none('the harness guest does not run on this kernel (a read of its own code did not halt with the value)');
  const caps = new Map<number, number>();
  for (const [k, v] of lines) if (k.startsWith('cap_')) caps.set(Number(k.slice(4)), Number(v));
  return {
    usable: true,
    caps,
    hugetlb1gFree: Number(lines.get('hugetlb_1g_free') ?? 0),
    userfaultfd: lines.get('userfaultfd') === 'ok',
  };
}
