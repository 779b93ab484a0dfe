// The entry of one campaign worker thread (workers.ts starts it from dist/): it runs the shares the
// parent sends, one at a time, and posts back each share's plain-data result and its progress. A
// stop request is a flag in shared memory, read before every run (a worker's event loop is busy).
import { parentPort, workerData } from 'node:worker_threads';
import { type CampaignConfig, type RunShare, runShare } from './runner.js';
import type { WorkerMessage } from './workers.js';

export interface WorkerInit {
  /** The campaign without the kvm backend (that stays in the one process: see workers.ts). */
  readonly config: Omit<CampaignConfig, 'kernel'>;
  /** An Int32Array's buffer: non-zero once the parent asks every worker to stop. */
  readonly stopFlag: SharedArrayBuffer;
}

export interface ShareRequest {
  readonly index: number;
  readonly share: RunShare;
}

const port = parentPort;
if (!port) throw new Error('campaign-worker.js runs as a worker thread (started by workers.ts)');
const init = workerData as WorkerInit;
const flag = new Int32Array(init.stopFlag);
const stop = { requested: () => Atomics.load(flag, 0) !== 0 };
const post = (m: WorkerMessage): void => port.postMessage(m);

/** Progress at most every PROGRESS_MS (a message per run would wake the parent thousands of times). */
const PROGRESS_MS = 100;

port.on('message', ({ index, share }: ShareRequest) => {
  let last = 0;
  try {
    const result = runShare(init.config, share, stop, (p) => {
      const now = performance.now();
      if (now - last < PROGRESS_MS) return;
      last = now;
      post({ kind: 'progress', index, done: p.run - share.start, shrinking: p.shrinking });
    });
    post({ kind: 'result', index, result });
  } catch (e) {
    post({ kind: 'error', index, message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  }
});
