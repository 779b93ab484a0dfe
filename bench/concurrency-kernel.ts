// The kernel's figures of the concurrency bench (issue 10 item 8 on /dev/kvm): concurrent cases/s
// on the real kernel (one OS thread per actor, src/kvm/concurrent.ts) for --threads 2 and 3 against
// the sequential kvm check's sequences/s on the same budget, and the checker's time per kernel
// history (median, p99) with its undecided rate. The spec runs under the pvm-6.18 profile (this
// machine's platform, as the test suite's kvm tests do); a campaign that stops at a finding says so.
import { makeConfig } from '../model/series.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { DEFAULT_MAX_COMMANDS } from '../src/harness/budgets.js';
import { KERNEL_CONCURRENT_INVARIANTS, runKernelConcurrentCampaign } from '../src/harness/kernel-concurrent.js';
import { runCampaign } from '../src/harness/runner.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { loadProfile } from '../src/kvm/platform.js';

export const PLATFORM = 'pvm-6.18';

export interface KernelRow {
  readonly threads: number;
  readonly cases: number;
  readonly commands: number;
  readonly ms: number;
  readonly checkMs: readonly number[];
  readonly undecided: number;
  readonly leftOut: number;
  /** The campaign stopped at a finding (its invariant) before the budget was spent. */
  readonly stoppedAt: string | null;
}

export interface KernelFigures {
  readonly sequential: { readonly runs: number; readonly commands: number; readonly ms: number };
  readonly rows: readonly KernelRow[];
}

/** The kernel's figures, or the reason they cannot be taken on this machine. */
export async function kernelFigures(runs: number, seed: number): Promise<KernelFigures | { skipped: string }> {
  const opened = KvmBackend.open();
  if ('skipped' in opened) return { skipped: opened.skipped };
  const profile = loadProfile(PLATFORM);
  const model = makeConfig(
    [],
    {},
    profile.deviations.map((d) => d.id),
  );
  try {
    const started = performance.now();
    const kernel = { backend: opened, profile };
    const config = { arches: ['x86' as const], seed, runs, maxCommands: DEFAULT_MAX_COMMANDS, mutant: null, model };
    const seq = runCampaign({ ...config, invariants: INVARIANT_IDS, kernel });
    const sequential = { runs: seq.runs, commands: seq.commands, ms: performance.now() - started };
    const rows: KernelRow[] = [];
    for (const threads of [2, 3]) {
      const t0 = performance.now();
      const campaign = { seed, runs, threads: [threads], invariants: KERNEL_CONCURRENT_INVARIANTS, model };
      const r = await runKernelConcurrentCampaign({ ...campaign, backend: opened }, { requested: () => false });
      const s = r.summary;
      const leftOut = [...s.leftOut.values()].reduce((a, b) => a + b, 0);
      const stoppedAt = r.failure ? r.failure.invariant : null;
      rows.push({
        threads,
        cases: s.cases,
        commands: s.commands,
        ms: performance.now() - t0,
        checkMs: s.checkMs,
        undecided: s.undecided,
        leftOut,
        stoppedAt,
      });
    }
    return { sequential, rows };
  } finally {
    opened.close();
  }
}
