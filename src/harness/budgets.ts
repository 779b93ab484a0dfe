// Default budgets of a campaign, shared by the CLI, the tests and the benchmarks.

/** Runs per architecture of the default `check` (about a minute on both profiles on these machines). */
export const DEFAULT_RUNS = 25000;
/** check --backend kvm: every sequence also runs in a fresh real VM (about a minute on these machines). */
export const DEFAULT_KVM_RUNS = 10000;
/**
 * check --threads N --backend kvm: concurrent cases on /dev/kvm (docs/ARCHITECTURE.md "Concurrent
 * campaigns" measures the rate here and justifies the size: about a minute).
 */
export const DEFAULT_KVM_CONCURRENT_RUNS = 3000;
/** The longest generated command sequence of one run. */
export const DEFAULT_MAX_COMMANDS = 40;
/** check --threads N (2..8): concurrent cases per architecture (each is a setup, N threads and a schedule). */
export const DEFAULT_CONCURRENT_RUNS = 2000;
/**
 * The concurrent share of the default `check`: this many cases per architecture for each of
 * SHARE_THREADS (docs/ARCHITECTURE.md "Concurrent campaigns" measures and justifies the size).
 */
export const DEFAULT_CONCURRENT_SHARE = 500;
export const SHARE_THREADS: readonly number[] = [2, 3];
/**
 * The vmm share of the default `check`: one run in this many (per architecture) uses the vmm
 * profile (docs/ARCHITECTURE.md "Generator profiles": a vmm run costs about 65 small runs).
 */
export const VMM_SHARE_EVERY = 1000;
