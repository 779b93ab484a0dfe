// A concurrent case (model/history.ts) on the real kernel (issue 10 item 5): the setup runs in a fresh
// VM as a sequence's batch does, then every thread of the case runs on its own pthread in the helper
// (native/concurrent.c), released together by a barrier, each command timed with CLOCK_MONOTONIC.
// The answer is the setup's results and the threads' results as a History with clock 'ns', for the
// linearizability checker to judge against the spec. A case holding a command the kernel backend
// leaves out is left out whole, with the reason: never a partial run.
import { formatCommand, type Command } from '../../model/commands.js';
import type { ConcurrentCase, History, HistoryEvent, ThreadRole } from '../../model/history.js';
import { outcomeMismatch } from '../../model/observable.js';
import type { Outcome } from '../../model/outcomes.js';
import type { ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives, type SequentialCommand } from '../../model/spec.js';
import { newSpecState, type SpecState } from '../../model/state.js';
import { LEFT_OUT, type KvmBackend } from './backend.js';
import { CHUNK } from './helper.js';
import { kernelMismatch } from './platform.js';
import { CONC_VMM, OP, decodeOutcome, encodeCommand, type KernelResult, type Request } from './protocol.js';

/** vCPUs the helper's VM has (kvm-ops.c NR_VCPUS) and threads a case may have (concurrent.c). */
export const KERNEL_VCPUS = 2;
export const KERNEL_MAX_THREADS = 8;

/** Why a case cannot run on the kernel, besides the kvm backend's own reasons (LEFT_OUT). */
export const CASE_LEFT_OUT = {
  shape: 'the case has a different number of roles and thread command lists',
  threads: `the helper runs at most ${KERNEL_MAX_THREADS} threads`,
  vcpu: `the helper's VM has vCPUs 0..${KERNEL_VCPUS - 1}, one thread each`,
  role: 'a vCPU thread runs guest accesses on its own vCPU only, a VMM thread everything but guest accesses',
  size: `the case needs more than ${CHUNK} helper requests (one batch)`,
} as const;

export interface CaseLeftOut {
  readonly kind: 'left-out';
  /** 'setup' or 'thread T', and the command's 1-based position there (0: the case as a whole). */
  readonly where: string;
  readonly step: number;
  readonly command: string;
  readonly reason: string;
}

/** One thread command's kernel result and its CLOCK_MONOTONIC ns since the barrier (invoke < respond). */
export interface TimedResult {
  readonly result: KernelResult;
  readonly invoke: number;
  readonly respond: number;
}

export type ConcurrentKernelRun =
  | CaseLeftOut
  | {
      readonly kind: 'died';
      readonly how: string;
      readonly stderr: string;
      /** It died in the first helper and again in a fresh one. */
      readonly retried: boolean;
    }
  | {
      readonly kind: 'ran';
      readonly setup: readonly KernelResult[];
      /** The first setup result the spec does not allow, as kernel-agrees words it, or null. */
      readonly setupMismatch: { readonly step: number; readonly message: string } | null;
      /** The spec after the setup, following the kernel's results where the spec allows several. */
      readonly specAfterSetup: SpecState;
      readonly threads: readonly (readonly TimedResult[])[];
      /** Null when some thread's result is a harness problem (listed in `problems`): no history to judge. */
      readonly history: History | null;
      readonly problems: readonly string[];
    };

export interface ConcurrentOptions {
  /** Guest time each guest access may use (kvm-ops.c), as for a sequence. */
  readonly runTimeoutMs?: number;
}

const leftOutAt = (where: string, step: number, cmd: Command | null, reason: string): CaseLeftOut => ({
  kind: 'left-out',
  where,
  step,
  command: cmd ? formatCommand(cmd) : '',
  reason,
});

/** Whether a thread of `role` may run `cmd` (concurrent.c conc_allowed, the same rule). */
function roleAllows(role: ThreadRole, cmd: Command): boolean {
  if (role.kind === 'vcpu') return cmd.kind === 'guestAccess' && cmd.vcpu === role.vcpu;
  return cmd.kind !== 'guestAccess';
}

function rolesLeftOut(c: ConcurrentCase): CaseLeftOut | null {
  if (c.roles.length !== c.threads.length || c.roles.length === 0)
    return leftOutAt('case', 0, null, CASE_LEFT_OUT.shape);
  if (c.roles.length > KERNEL_MAX_THREADS) return leftOutAt('case', 0, null, CASE_LEFT_OUT.threads);
  const vcpus = c.roles.flatMap((r) => (r.kind === 'vcpu' ? [r.vcpu] : []));
  const bad = vcpus.some((v, i) => !Number.isInteger(v) || v < 0 || v >= KERNEL_VCPUS || vcpus.indexOf(v) !== i);
  return bad ? leftOutAt('case', 0, null, CASE_LEFT_OUT.vcpu) : null;
}

/** Why the case's shape or a thread command's role keeps it off the kernel's threads, or null. */
export function caseRoleRefusal(c: ConcurrentCase): string | null {
  const shape = rolesLeftOut(c);
  if (shape) return shape.reason;
  for (const [t, list] of c.threads.entries()) {
    for (const [i, cmd] of list.entries()) {
      const why = roleAllows(c.roles[t]!, cmd) ? null : CASE_LEFT_OUT.role;
      if (why) return `thread ${t} step ${i + 1} (${formatCommand(cmd)}): ${why}`;
    }
  }
  return null;
}

/**
 * The first reason the case cannot run on the kernel: a setup command the backend leaves out (the
 * spec stepped alongside, as kernel-left-out.ts does for a sequence), the case's shape, or a thread
 * command the backend leaves out or the thread's role may not run.
 */
export function caseLeftOut(
  backend: Pick<KvmBackend, 'leftOut'>,
  c: ConcurrentCase,
  model: ModelConfig,
): CaseLeftOut | null {
  const spec = newSpecState('x86', model); // the kvm backend drives x86 guests only
  for (const [i, cmd] of c.setup.entries()) {
    const why = backend.leftOut(cmd, spec);
    if (why) return leftOutAt('setup', i + 1, cmd, LEFT_OUT[why]);
    applyCommand(spec, cmd as SequentialCommand); // raceAccess is left out above
  }
  const shape = rolesLeftOut(c);
  if (shape) return shape;
  for (const [t, list] of c.threads.entries()) {
    for (const [i, cmd] of list.entries()) {
      const where = `thread ${t}`;
      const why = backend.leftOut(cmd, spec);
      if (why) return leftOutAt(where, i + 1, cmd, LEFT_OUT[why]);
      if (!roleAllows(c.roles[t]!, cmd)) return leftOutAt(where, i + 1, cmd, CASE_LEFT_OUT.role);
    }
  }
  return null;
}

/** kvm-ops.c's wall-clock backstop for one KVM_RUN (10x the guest timeout, at least 10 s). */
const wallBackstopMs = (runTimeoutMs: number): number => Math.max(runTimeoutMs * 10, 10_000);
/** The most one command may take in the helper before it counts as stuck. */
const commandBudgetMs = (cmd: Command, runTimeoutMs: number): number =>
  cmd.kind === 'guestAccess' ? wallBackstopMs(runTimeoutMs) : 2000;

interface Encoded {
  requests: Request[];
  /** The request index answering each setup command. */
  setupAnswers: number[];
  /** The BEGIN request's index; thread t's command i is answered at threadAnswers[t][i]. */
  begin: number;
  threadAnswers: number[][];
  /** Bounds: the helper's join budget for the threads, the parent's deadline for the whole batch. */
  joinBudgetMs: number;
  deadlineMs: number;
}

function encodeOne(cmd: Command): Request[] {
  const reqs = encodeCommand(cmd);
  if (!reqs) throw new Error(`kvm concurrent: no request for ${cmd.kind} (it should have been left out)`);
  return reqs;
}

function encodeCase(c: ConcurrentCase, runTimeoutMs: number): Encoded {
  const requests: Request[] = [{ op: OP.reset, a32: 0, args: [] }];
  const setupAnswers = c.setup.map((cmd) => {
    requests.push(...encodeOne(cmd));
    return requests.length - 1;
  });
  const begin = requests.length;
  const threadBudget = (list: readonly Command[]): number =>
    list.reduce((ms, cmd) => ms + commandBudgetMs(cmd, runTimeoutMs), 0);
  const joinBudgetMs = 2000 + Math.max(...c.threads.map(threadBudget));
  requests.push({ op: OP.concBegin, a32: 0, args: [c.threads.length, 0, joinBudgetMs] });
  const threadAnswers = c.threads.map((list, t) => {
    const role = c.roles[t]!;
    requests.push({ op: OP.concThread, a32: 0, args: [t, role.kind === 'vcpu' ? role.vcpu : CONC_VMM, list.length] });
    return list.map((cmd) => {
      const reqs = encodeOne(cmd);
      if (reqs.length !== 1) throw new Error(`kvm concurrent: ${cmd.kind} takes ${reqs.length} requests, not one`);
      requests.push(reqs[0]!);
      return requests.length - 1;
    });
  });
  requests[begin]!.args = [c.threads.length, requests.length - begin - 1, joinBudgetMs];
  const setupMs = c.setup.reduce((ms, cmd) => ms + commandBudgetMs(cmd, runTimeoutMs), 0);
  return { requests, setupAnswers, begin, threadAnswers, joinBudgetMs, deadlineMs: setupMs + joinBudgetMs + 5000 };
}

/**
 * The spec after the setup, following the kernel where the spec allows several outcomes, and the
 * first setup result it does not allow (kernel-agrees' words; the model's platform deviations apply).
 */
function followSetup(
  setup: readonly Command[],
  results: readonly KernelResult[],
  model: ModelConfig,
): { spec: SpecState; mismatch: { step: number; message: string } | null } {
  let spec = newSpecState('x86', model);
  for (const [i, cmd] of setup.entries()) {
    const kernel = results[i]!;
    const alternatives = specAlternatives(spec, cmd);
    if (alternatives) {
      const agreed =
        kernel.kind === 'harness' ? undefined : alternatives.find((a) => outcomeMismatch(a.outcome, kernel) === null);
      if (agreed) {
        spec = agreed.state;
        continue;
      }
      const verdict = kernelMismatch(alternatives[0]!.outcome, kernel);
      return { spec, mismatch: { step: i + 1, message: verdict.mismatch ?? 'no alternative of the spec agrees' } };
    }
    const expected: Outcome = applyCommand(spec, cmd as SequentialCommand);
    const verdict = kernelMismatch(expected, kernel);
    if (verdict.mismatch) return { spec, mismatch: { step: i + 1, message: verdict.mismatch } };
  }
  return { spec, mismatch: null };
}

/** Thread t's results with their times; respond is widened by 1 ns (concurrent.c: ties mean overlap). */
function timedResults(c: ConcurrentCase, e: Encoded, responses: ReturnType<KvmBackend['runRequests']>['responses']) {
  const times = responses[e.begin]!.data;
  return c.threads.map((list, t) =>
    list.map((cmd, i): TimedResult => {
      const at = e.threadAnswers[t]![i]!;
      const slot = 16 * (at - e.begin - 1);
      const invoke = Number(times.readBigInt64LE(slot));
      const respond = Number(times.readBigInt64LE(slot + 8)) + 1;
      return { result: decodeOutcome(cmd, responses[at]!), invoke, respond };
    }),
  );
}

/** The threads' results as a history, events in order of invocation; null with the problems if any. */
function historyOf(c: ConcurrentCase, threads: readonly (readonly TimedResult[])[]) {
  const problems: string[] = [];
  const flat: Omit<HistoryEvent, 'id'>[] = [];
  for (const [t, list] of threads.entries()) {
    for (const [index, r] of list.entries()) {
      const command = c.threads[t]![index]!;
      if (r.result.kind === 'harness') {
        problems.push(`thread ${t} command ${index + 1} (${formatCommand(command)}): ${r.result.message}`);
        continue;
      }
      flat.push({ thread: t, index, command, outcome: r.result, invoke: r.invoke, respond: r.respond });
    }
  }
  if (problems.length) return { history: null, problems };
  flat.sort((a, b) => a.invoke - b.invoke || a.thread - b.thread);
  const events = flat.map((e, id) => ({ ...e, id }));
  const history: History = { threads: c.threads.length, clock: 'ns', events };
  return { history, problems };
}

function runOnce(
  backend: KvmBackend,
  c: ConcurrentCase,
  model: ModelConfig,
  runTimeoutMs: number,
): ConcurrentKernelRun {
  const e = encodeCase(c, runTimeoutMs);
  const batch = backend.runRequests(e.requests, { runTimeoutMs, deadlineMs: e.deadlineMs });
  if (batch.died) return { kind: 'died', how: batch.died.how, stderr: batch.died.stderr, retried: false };
  const reset = batch.responses[0]!;
  if (reset.status !== 0)
    return {
      kind: 'died',
      how: `KVM_CREATE_VM or KVM_CREATE_VCPU failed with errno ${reset.err}`,
      stderr: '',
      retried: false,
    };
  const setup = c.setup.map((cmd, i) => decodeOutcome(cmd, batch.responses[e.setupAnswers[i]!]!));
  const begin = batch.responses[e.begin]!;
  if (begin.status !== 0) throw new Error('kvm concurrent: the helper rejected the case section (malformed)');
  const { spec, mismatch } = followSetup(c.setup, setup, model);
  const threads = timedResults(c, e, batch.responses);
  const { history, problems } = historyOf(c, threads);
  return { kind: 'ran', setup, setupMismatch: mismatch, specAfterSetup: spec, threads, history, problems };
}

/**
 * Run a concurrent case on the kernel: left out whole when any command cannot run there; otherwise
 * in a fresh VM, the setup sequentially and then the threads. A helper that dies (a crash, a kill, a
 * thread stuck past the case's budget, no answer by the deadline) is retried once in a fresh helper,
 * as a sequence is; a second death is the case's.
 */
export function runConcurrentOnKernel(
  backend: KvmBackend,
  c: ConcurrentCase,
  model: ModelConfig,
  options: ConcurrentOptions = {},
): ConcurrentKernelRun {
  const left = caseLeftOut(backend, c, model);
  if (left) return left;
  const total = encodeCase(c, 2000).requests.length;
  if (total > CHUNK) return leftOutAt('case', 0, null, CASE_LEFT_OUT.size);
  const runTimeoutMs = options.runTimeoutMs ?? 2000;
  backend.sequences++;
  const first = runOnce(backend, c, model, runTimeoutMs);
  if (first.kind !== 'died') return first;
  backend.retries++;
  const again = runOnce(backend, c, model, runTimeoutMs);
  return again.kind === 'died' ? { ...again, retried: true } : again;
}

/** One line for a left-out case, as a report prints it. */
export const formatCaseLeftOut = (l: CaseLeftOut): string =>
  l.step === 0
    ? `the case cannot run on the kvm backend: ${l.reason}`
    : `${l.where} step ${l.step} (${l.command}) cannot run on the kvm backend: ${l.reason}`;
