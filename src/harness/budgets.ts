// Default budgets of a campaign, shared by the CLI, the tests and the benchmarks.

/** Runs per architecture of the default `check` (about a minute on both profiles on these machines). */
export const DEFAULT_RUNS = 25000;
/** check --backend kvm: every sequence also runs in a fresh real VM (about a minute on these machines). */
export const DEFAULT_KVM_RUNS = 10000;
/** The longest generated command sequence of one run. */
export const DEFAULT_MAX_COMMANDS = 40;
