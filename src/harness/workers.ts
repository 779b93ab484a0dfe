// A campaign over worker threads (check --workers N). Each architecture's runs are cut into shares
// of consecutive run indices (runner.ts runShare runs a share exactly as the one-process campaign
// runs those runs); idle workers take the next share in order, and the results are merged in share
// order, so the result does not depend on N or on timing:
// - runs, commands and coverage are sums over the shares up to the first failing one (coverage
//   keys in the order one process first counts them);
// - the first failure is the failing share with the lowest (arch, run index): shares below it are
//   finished, shares above it are cancelled (their workers terminated) and never merged; its worker
//   shrank and minimized it as runCampaign does (same run, same shrink path);
// - a stop request (SIGINT) is a shared-memory flag every worker reads before each run; the result
//   is marked interrupted and reports the runs that ran.
// The kvm backend holds one helper process and is not shared: a kernel campaign runs in one process.
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Coverage } from './coverage.js';
import type { ShareRequest, WorkerInit } from './campaign-worker.js';
import {
  partsOf,
  type CampaignConfig,
  type CampaignResult,
  type Failure,
  type HelperDeathFinding,
  type Progress,
  type RunShare,
  type ShareResult,
  type StopRequest,
} from './runner.js';

/** Upper bound of --workers (far more than the machines this runs on have cores). */
export const MAX_WORKERS = 64;

/** Shares per worker and architecture: enough that the last shares end close together. */
const SHARES_PER_WORKER = 8;

export type WorkerMessage =
  | { readonly kind: 'progress'; readonly index: number; readonly done: number; readonly shrinking: boolean }
  | { readonly kind: 'result'; readonly index: number; readonly result: ShareResult }
  | { readonly kind: 'error'; readonly index: number; readonly message: string };

/** The shares of a campaign, in merge order: by architecture, then part (partsOf), then run index. */
export function planShares(config: CampaignConfig, workers: number): RunShare[] {
  const shares: RunShare[] = [];
  for (let archIndex = 0; archIndex < config.arches.length; archIndex++)
    for (const [part, { config: partConfig }] of partsOf(config, archIndex).entries()) {
      const runs = partConfig.runs;
      const size = Math.max(1, Math.ceil(runs / (workers * SHARES_PER_WORKER)));
      for (let start = 0; start < runs; start += size)
        shares.push({ archIndex, part, start, count: Math.min(size, runs - start) });
    }
  return shares;
}

/** Fold one share's helper-death findings into the campaign's, as noteHelperDeath would have. */
function mergeHelperDeaths(into: HelperDeathFinding[], from: readonly HelperDeathFinding[]): void {
  const kindOf = (d: HelperDeathFinding) => d.failure.steps[d.step - 1]?.cmd.kind;
  for (const d of from) {
    const same = into.find((x) => x.how === d.how && kindOf(x) === kindOf(d));
    if (same) same.repeats += d.repeats + 1;
    else into.push({ ...d });
  }
}

/**
 * The campaign's result from its shares' (in share order; undefined: never ran because a stop was
 * requested): everything up to and including the first failing share.
 */
export function mergeShares(results: readonly (ShareResult | undefined)[], elapsedMs: number): CampaignResult {
  const coverage = new Coverage();
  const helperDeaths: HelperDeathFinding[] = [];
  let runs = 0;
  let commands = 0;
  let interrupted = false;
  let failure: Failure | undefined;
  for (const r of results) {
    if (!r) {
      interrupted = true;
      continue;
    }
    runs += r.runs;
    commands += r.commands;
    for (const [key, n] of r.coverage) coverage.count(key, n);
    mergeHelperDeaths(helperDeaths, r.helperDeaths);
    interrupted ||= r.interrupted;
    if (r.failure) {
      failure = r.failure;
      break;
    }
  }
  const base = { runs, commands, elapsedMs, coverage, helperDeaths, ...(interrupted ? { interrupted } : {}) };
  return failure ? { ok: false, ...base, failure } : { ok: true, ...base };
}

/**
 * The compiled worker entry. Workers run dist/ (a worker cannot load TypeScript); under vitest this
 * module is the TS source, so the entry is dist/src/harness/campaign-worker.js, which `npm test`
 * builds before vitest runs. Missing: an error that says so, never a silent fallback.
 */
export function workerEntry(): URL {
  const here = new URL(import.meta.url);
  const compiled = here.pathname.endsWith('.js');
  const entry = new URL(compiled ? './campaign-worker.js' : '../../dist/src/harness/campaign-worker.js', here);
  if (!existsSync(entry))
    throw new Error(`--workers needs the compiled harness: ${fileURLToPath(entry)} is missing (npm run build)`);
  return entry;
}

/** runCampaignInterruptible over `workers` threads; the same result for every N (see the header). */
export function runCampaignInWorkers(
  config: CampaignConfig,
  workers: number,
  stop: StopRequest,
  onProgress?: (p: Progress) => void,
): Promise<CampaignResult> {
  if (config.kernel) throw new Error('harness bug: a kvm backend campaign runs in one process (--workers 1)');
  const started = performance.now();
  const shares = planShares(config, workers);
  const results: (ShareResult | undefined)[] = new Array(shares.length).fill(undefined);
  const done: number[] = new Array(shares.length).fill(0);
  const init: WorkerInit = { config, stopFlag: new SharedArrayBuffer(4) };
  const flag = new Int32Array(init.stopFlag);
  const entry = workerEntry();
  return new Promise<CampaignResult>((resolve, reject) => {
    const running = new Map<Worker, number>();
    let next = 0;
    let firstFailure = shares.length;
    let ended = false;
    const stopRequested = (): boolean => {
      if (stop.requested()) Atomics.store(flag, 0, 1);
      return Atomics.load(flag, 0) !== 0;
    };
    const poll = setInterval(stopRequested, 25);
    const end = (error?: Error): void => {
      if (ended) return;
      ended = true;
      clearInterval(poll);
      running.clear();
      for (const w of pool) void w.terminate();
      if (error) reject(error);
      else resolve(mergeShares(results.slice(0, firstFailure + 1), performance.now() - started));
    };
    const dispatch = (w: Worker): void => {
      if (!stopRequested() && next < shares.length && next <= firstFailure) {
        const request: ShareRequest = { index: next, share: shares[next]! };
        running.set(w, next++);
        w.postMessage(request);
      } else if (running.size === 0) end();
    };
    const reportProgress = (index: number, shrinking: boolean): void => {
      const arch = config.arches[shares[index]!.archIndex]!;
      let run = 0;
      for (const [i, s] of shares.entries()) if (config.arches[s.archIndex] === arch) run += done[i]!;
      onProgress?.({ arch, run, total: config.runs, shrinking });
    };
    const onMessage = (w: Worker, m: WorkerMessage): void => {
      if (ended) return;
      switch (m.kind) {
        case 'progress':
          done[m.index] = m.done;
          reportProgress(m.index, m.shrinking);
          return;
        case 'error':
          end(new Error(`campaign worker failed on share ${m.index}: ${m.message}`));
          return;
        case 'result':
          if (!running.has(w)) return; // a cancelled share's last word
          results[m.index] = m.result;
          done[m.index] = m.result.runs;
          reportProgress(m.index, false);
          running.delete(w);
          if (m.result.failure && m.index < firstFailure) {
            firstFailure = m.index;
            // Runs above the first failure are not part of the result: stop spending time on them.
            for (const [other, i] of running)
              if (i > m.index) {
                running.delete(other);
                void other.terminate();
              }
          }
          dispatch(w);
          return;
        default: {
          const unexpected: never = m;
          throw new Error(`unexpected worker message ${JSON.stringify(unexpected)}`);
        }
      }
    };
    const pool = Array.from({ length: Math.max(1, Math.min(workers, shares.length)) }, () => {
      const w = new Worker(entry, { workerData: init });
      w.on('message', (m: WorkerMessage) => onMessage(w, m));
      w.on('error', (e) => end(e instanceof Error ? e : new Error(String(e))));
      w.on('exit', (code) => {
        const share = running.get(w);
        if (share !== undefined) end(new Error(`campaign worker exited (code ${code}) during share ${share}`));
      });
      return w;
    });
    for (const w of pool) dispatch(w);
  });
}
