// The vocabulary of a concurrent run (issue 10): a case (setup prefix, one command list per thread,
// a schedule), the history it produced (each command's invocation and response, per thread), and
// the linearizability verdict on that history. Shared by the engine's interleaver (src/mmu), the
// kernel's threaded runner (src/kvm), the checker (properties) and the reports (harness).
import type { z } from 'zod';
import type { concurrentCaseSchema, threadRoleSchema } from './command-schema.js';
import type { Command } from './commands.js';
import type { Outcome } from './outcomes.js';

/**
 * What a thread of a concurrent run is: a vCPU thread (KVM_RUN on one vCPU only: vcpu->mutex
 * serializes KVM_RUN per vCPU, and INV-16 says only that thread fills its kvm_run) or a VMM thread
 * (memslot and dirty-log ioctls, host address-space calls, guest_memfd calls). Inferred from the
 * schema (model/command-schema.ts threadRoleSchema), the single source, as model/commands.ts does.
 */
export type ThreadRole = z.output<typeof threadRoleSchema>;

/**
 * One concurrent case: the setup runs sequentially first, then the threads interleave.
 * threads[t] is what thread t runs, in order. `schedule`: which runnable thread steps next, one
 * entry per scheduling decision: the decision picks runnable[entry % runnable.length] (runnable
 * sorted by thread index). Once the schedule is exhausted the lowest-numbered runnable thread
 * steps, so shrinking the schedule toward [] tends to the sequential order thread 0, thread 1, ...
 * Inferred from concurrentCaseSchema (bounds and role rules live there).
 */
export type ConcurrentCase = z.output<typeof concurrentCaseSchema>;
/** What a thread may run (the schema's refinement narrows out raceAccess and demandPaging). */
export type ThreadCommand = ConcurrentCase['threads'][number][number];

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
  /**
   * Engine, memory ordering (src/mmu/store-buffer.ts): the step at which the last store the
   * command left in its thread's store buffer became visible to every thread, when that came after
   * its response. Other threads can tell it completed only from then on.
   */
  visible?: number;
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
