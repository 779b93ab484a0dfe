// The vocabulary of a concurrent run (issue 10): a case (setup prefix, one command list per thread,
// a schedule), the history it produced (each command's invocation and response, per thread), and
// the linearizability verdict on that history. Shared by the engine's interleaver (src/mmu), the
// kernel's threaded runner (src/kvm), the checker (properties) and the reports (harness).
import type { Command } from './commands.js';
import type { Outcome } from './outcomes.js';

/**
 * What a thread of a concurrent run is: a vCPU thread (KVM_RUN on one vCPU only: vcpu->mutex
 * serializes KVM_RUN per vCPU, and INV-16 says only that thread fills its kvm_run) or a VMM thread
 * (memslot and dirty-log ioctls, host address-space calls, guest_memfd calls).
 */
export type ThreadRole = { kind: 'vcpu'; vcpu: number } | { kind: 'vmm' };

/** One concurrent case: the setup runs sequentially first, then the threads interleave. */
export interface ConcurrentCase {
  setup: Command[];
  roles: ThreadRole[];
  /** threads[t]: the commands thread t runs, in order. */
  threads: Command[][];
  /**
   * Which runnable thread steps next, one entry per scheduling decision: the decision picks
   * runnable[entry % runnable.length] (runnable sorted by thread index). Once the schedule is
   * exhausted the lowest-numbered runnable thread steps, so shrinking the schedule toward [] tends
   * to the sequential order thread 0, thread 1, ...
   */
  schedule: number[];
}

/** One command of one thread, with the logical times of its invocation and response. */
export interface HistoryEvent {
  /** Index of this event in History.events. */
  id: number;
  thread: number;
  /** Position of the command in its thread's list. */
  index: number;
  command: Command;
  outcome: Outcome;
  /** Engine: scheduling-decision counters; kernel: nanoseconds since the run started. invoke < respond. */
  invoke: number;
  respond: number;
}

export interface History {
  threads: number;
  clock: 'steps' | 'ns';
  events: HistoryEvent[];
}

/**
 * The checker's answer. `order` and `longestPrefix` list event ids; `blocked` lists the events that
 * were candidates to come next after the longest linearizable prefix and none of which the spec
 * allows there (the point a timeline marks). A complete `longestPrefix` with `blocked` empty: every
 * event could be placed, but the model rejected each complete order's final state. `part`: with a
 * partition (P-compositionality), the ids of the part that has no linearization; longestPrefix and
 * blocked are within it. `statesExplored` counts the (linearized set, state) configurations the
 * search visited; `undecided` means it stopped after more than `bound` of them.
 */
export type LinearizabilityVerdict =
  | { kind: 'linearizable'; order: number[]; statesExplored: number }
  | { kind: 'not-linearizable'; longestPrefix: number[]; blocked: number[]; statesExplored: number; part?: number[] }
  | { kind: 'undecided'; statesExplored: number; bound: number };
