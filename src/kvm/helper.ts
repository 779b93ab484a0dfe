// The native helper as a long-lived child process, driven synchronously (the harness's sessions
// are synchronous): requests go down one FIFO and a batch's responses come back up another in one
// write, read in large blocking reads. A helper that dies is noticed at end of file, its cause read
// from /proc, the responses it finished read from the answers file it shares with us (answers.c),
// and a new one started for the next batch; the request it died on is reported by index.
//
// The FIFOs' directory lives only until both ends are open (the open file descriptions keep the
// pipes, the helper's stderr file is read through a descriptor): no kill of either process, no
// signal and no crash of the harness can leave a kvm-memmodel-* directory behind.
//
// The helper reads a whole batch before it writes a response, so a batch never deadlocks on full
// pipes; a sequence longer than CHUNK requests goes as several batches, each written whole and its
// responses read before the next (the helper caps a batch at 65,536 requests).
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ANSWERS_HEADER,
  ANSWERS_MAGIC,
  ERROR_MAGIC,
  FLAG_SEQUENCE_END,
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

const SIGNAL_NAMES: Record<number, string> = { 6: 'SIGABRT', 7: 'SIGBUS', 9: 'SIGKILL', 11: 'SIGSEGV', 15: 'SIGTERM' };

/** How a helper ended, from its zombie's /proc/PID/stat (field 52, a waitpid status). */
function deathOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = Number(fields[49]);
    const signal = status & 0x7f;
    if (signal) return `killed by signal ${signal}${SIGNAL_NAMES[signal] ? ` (${SIGNAL_NAMES[signal]})` : ''}`;
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
  /**
   * A bound on the wait for the whole batch's answers (a concurrent case): past it the helper is
   * killed and reported dead ("did not answer within N ms"). Without it reads block, as a sequence's
   * always did (the helper's own guest timers bound them).
   */
  deadlineMs?: number;
  /** The requests are a whole sequence: its last chunk carries FLAG_SEQUENCE_END (protocol.ts). */
  endsSequence?: boolean;
}

/** Requests per batch frame: well under the helper's 65,536 and a few hundred KiB of pipe traffic. */
export const CHUNK = 4096;
/** Bytes asked of the response FIFO per read: a 40-command sequence's answers in one. */
const READ_SIZE = 64 * 1024;

/** How long a new helper may take to open its FIFOs before it is killed as stuck. */
const CONNECT_TIMEOUT_MS = 10_000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** Whether process `pid` exists and is not a zombie (/proc/PID/stat state). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** Whether process `pid` has both FIFOs open (its /proc/PID/fd links name them). */
function opensBoth(pid: number, req: string, resp: string): boolean {
  try {
    const links = new Set(readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSafe(`/proc/${pid}/fd/${fd}`)));
    return links.has(req) && links.has(resp);
  } catch {
    return false;
  }
}

function readlinkSafe(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
}

/** Temporary directories of helpers still starting, removed synchronously on an abrupt exit. */
const liveDirs = new Set<string>();
/** A fresh directory on /dev/shm (tmpfs), or undefined where there is none we may write. */
function shmDir(): string | undefined {
  try {
    return mkdtempSync(join('/dev/shm', 'kvm-memmodel-'));
  } catch {
    return undefined;
  }
}

export function removeTempDirs(): void {
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  liveDirs.clear();
}

export class HelperProcess {
  private child: ChildProcess | undefined;
  private reqFd = -1;
  private respFd = -1;
  /** A non-blocking open of the response FIFO, for reads with a deadline (opened on first use). */
  private pollFd = -1;
  private deadline: number | undefined;
  private timedOut: string | undefined;
  private deadlineBudget = 0;
  private errFd = -1;
  /** Our descriptor of the answers file (answers.c): the responses of a batch, read after a death. */
  private answersFd = -1;
  /** Bytes read from the response FIFO and not yet parsed (at `pendingAt`). */
  private pending = Buffer.alloc(0);
  private pendingAt = 0;
  /** Batches written whole to this helper: the answers file is the last one's when it says this number. */
  private batchesSent = 0;
  /** Helpers started after the first (one per death). */
  restarts = 0;
  private started = 0;

  constructor(readonly binary = helperPath()) {}

  /** The running helper's process id (tests kill it), or undefined between helpers. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): void {
    const dir = mkdtempSync(join(tmpdir(), 'kvm-memmodel-'));
    liveDirs.add(dir);
    // The answers file is shared memory for the helper (MAP_SHARED): on tmpfs it is never written back.
    const shm = shmDir() ?? dir;
    liveDirs.add(shm);
    try {
      const [req, resp, err] = ['req', 'resp', 'stderr'].map((n) => join(dir, n)) as [string, string, string];
      const answers = join(shm, 'answers');
      execFileSync('mkfifo', [req, resp]);
      const errWrite = openSync(err, 'w');
      this.errFd = openSync(err, 'r');
      const answersWrite = openSync(answers, 'w+');
      this.answersFd = openSync(answers, 'r+');
      // The answers file is the child's descriptor 3 (stdio[3]).
      const child = spawn(this.binary, [req, resp, '3'], { stdio: ['ignore', 'ignore', errWrite, answersWrite] });
      closeSync(errWrite);
      closeSync(answersWrite);
      this.pending = Buffer.alloc(0);
      this.pendingAt = 0;
      this.batchesSent = 0;
      if (child.pid === undefined) throw new Error(`kvm-memmodel: cannot start the kvm helper ${this.binary}`);
      child.unref();
      child.on('error', () => undefined);
      this.child = child;
      this.connect(child.pid, req, resp);
    } finally {
      for (const d of [dir, shm]) {
        rmSync(d, { recursive: true, force: true });
        liveDirs.delete(d);
      }
    }
    if (this.started++ > 0) this.restarts++;
  }

  /**
   * Open our ends of the FIFOs without ever blocking on a helper that died before opening its own
   * (a blocking open would wait for it for ever, deaf to SIGINT): keeper descriptors hold the other
   * end of each FIFO while we open ours and until the helper has opened both of its (seen in
   * /proc/PID/fd) or is gone. Then the keepers close, so EOF and EPIPE mean the helper died.
   */
  private connect(pid: number, req: string, resp: string): void {
    const keepers = [openSync(req, constants.O_RDWR), openSync(resp, constants.O_RDWR)];
    // /proc/PID/fd links name the resolved path (TMPDIR may be a symlink).
    const [reqPath, respPath] = [realpathSync(req), realpathSync(resp)] as [string, string];
    try {
      this.reqFd = openSync(req, 'w');
      this.respFd = openSync(resp, 'r');
      const deadline = Date.now() + CONNECT_TIMEOUT_MS;
      while (!opensBoth(pid, reqPath, respPath) && isAlive(pid)) {
        if (Date.now() > deadline) {
          process.kill(pid, 'SIGKILL'); // stuck before its first request: a death like any other
          break;
        }
        Atomics.wait(SLEEPER, 0, 0, 1);
      }
    } finally {
      for (const fd of keepers) closeSync(fd);
    }
  }

  private stderr(): string {
    if (this.errFd < 0) return '';
    try {
      const size = Math.min(fstatSync(this.errFd).size, 64 * 1024);
      const buf = Buffer.alloc(size);
      const n = size ? readSync(this.errFd, buf, 0, size, 0) : 0;
      return buf.subarray(0, n).toString('utf8').trim();
    } catch {
      return '';
    }
  }

  /**
   * The next `length` bytes from the response FIFO, or null at end of file. Reads take whatever the
   * pipe holds (a batch's responses come in one write), so a batch costs a few reads, not three a
   * response.
   */
  private readFull(length: number): Buffer | null {
    while (this.pending.length - this.pendingAt < length) {
      const have = this.pending.length - this.pendingAt;
      const buf = Buffer.allocUnsafe(Math.max(READ_SIZE, length));
      this.pending.copy(buf, 0, this.pendingAt);
      const n =
        this.deadline === undefined
          ? readSync(this.respFd, buf, have, buf.length - have, null)
          : this.readBy(buf.subarray(0, buf.length), have);
      if (n === 0) return null;
      this.pending = buf.subarray(0, have + n);
      this.pendingAt = 0;
    }
    const out = this.pending.subarray(this.pendingAt, this.pendingAt + length);
    this.pendingAt += length;
    return out;
  }

  /**
   * A read that gives up at the deadline (0, as at end of file, with timedOut set): Node has no
   * synchronous poll, so a non-blocking descriptor of the same FIFO is tried every ~0.1 ms.
   */
  private readBy(buf: Buffer, at: number): number {
    if (this.pollFd < 0)
      this.pollFd = openSync(`/proc/self/fd/${this.respFd}`, constants.O_RDONLY | constants.O_NONBLOCK);
    for (;;) {
      try {
        return readSync(this.pollFd, buf, at, buf.length - at, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      if (Date.now() > this.deadline!) {
        this.timedOut = `did not answer within ${this.deadlineBudget} ms and was killed`;
        return 0;
      }
      Atomics.wait(SLEEPER, 0, 0, 0.05);
    }
  }

  /** One response, or null at end of file; an error frame means the two sides disagree on the format. */
  private readResponse(): Response | null {
    const head = this.readFull(8);
    if (!head) return null;
    if (head.readUInt32LE(0) === ERROR_MAGIC)
      throw new Error(`kvm-memmodel: the kvm helper rejected a batch header (it read 0x${head.readUInt32LE(4)})`);
    const rest = this.readFull(RESP_SIZE - 8);
    if (!rest) return null;
    const header = Buffer.concat([head, rest]);
    const response = decodeResponseHeader(header);
    const length = responseDataLength(header);
    if (length) {
      const data = this.readFull(length);
      if (!data) return null;
      response.data = Buffer.from(data);
    }
    return response;
  }

  /** The responses a dead helper finished in its last batch, from the answers file. */
  private answered(): Response[] {
    const out: Response[] = [];
    try {
      const head = Buffer.alloc(ANSWERS_HEADER);
      if (readSync(this.answersFd, head, 0, ANSWERS_HEADER, 0) < ANSWERS_HEADER) return out;
      // Answers of an earlier batch (the helper died before it began this one) are not this batch's.
      if (head.readUInt32LE(0) !== ANSWERS_MAGIC || head.readUInt32LE(4) !== this.batchesSent) return out;
      const count = head.readUInt32LE(8);
      const bytes = Number(head.readBigUInt64LE(16));
      const body = Buffer.alloc(bytes);
      const got = bytes ? readSync(this.answersFd, body, 0, bytes, ANSWERS_HEADER) : 0;
      for (let at = 0; out.length < count && at + RESP_SIZE <= got; ) {
        const header = body.subarray(at, at + RESP_SIZE);
        const length = responseDataLength(header);
        if (at + RESP_SIZE + length > got) break;
        const response = decodeResponseHeader(header);
        response.data = Buffer.from(body.subarray(at + RESP_SIZE, at + RESP_SIZE + length));
        out.push(response);
        at += RESP_SIZE + length;
      }
    } catch {
      /* no answers file: the responses read from the pipe are all there is */
    }
    return out;
  }

  runBatch(requests: readonly Request[], options: BatchOptions = {}): BatchResult {
    if (!this.child) this.start();
    const responses: Response[] = [];
    let chunkStart = 0;
    this.deadlineBudget = options.deadlineMs ?? 0;
    this.deadline = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
    this.timedOut = undefined;
    try {
      for (let from = 0; from < requests.length || from === 0; from += CHUNK) {
        const chunk = requests.slice(from, from + CHUNK);
        chunkStart = responses.length;
        const last = from + CHUNK >= requests.length;
        const flags = (options.flags ?? 0) | (last && options.endsSequence ? FLAG_SEQUENCE_END : 0);
        const out = encodeBatch(chunk, flags, options.runTimeoutMs ?? 2000);
        for (let written = 0; written < out.length; ) written += writeSync(this.reqFd, out, written);
        this.batchesSent++;
        for (let i = 0; i < chunk.length; i++) {
          const response = this.readResponse();
          if (!response) return this.died(responses, chunkStart);
          responses.push(response);
        }
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EPIPE') return this.died(responses, chunkStart);
      throw e;
    }
    return { responses };
  }

  /** `chunkStart`: the index of the first request of the batch it died in. */
  private died(responses: Response[], chunkStart: number): BatchResult {
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
    if (this.timedOut) how = this.timedOut;
    // The batch's responses come up the pipe only when it is done: those it finished are in the file.
    const answered = this.answered();
    if (answered.length > responses.length - chunkStart) responses.splice(chunkStart, Infinity, ...answered);
    const stderr = this.stderr();
    this.stop();
    return { responses, died: { at: responses.length, how, stderr } };
  }

  /** Close the pipes (the helper exits at end of file) and forget the process. */
  stop(): void {
    for (const fd of [this.reqFd, this.respFd, this.errFd, this.pollFd, this.answersFd]) if (fd >= 0) closeSync(fd);
    this.reqFd = this.respFd = this.errFd = this.pollFd = this.answersFd = -1;
    this.pending = Buffer.alloc(0);
    this.pendingAt = 0;
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
