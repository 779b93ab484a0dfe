// The VMM-side protocols the engine can be driven by inside one command (the userfaultfd
// demand-paging agent of exit-on-missing). The engine does not implement them: a VMM is not KVM.
// Like the MMU notifier ops the host MM calls (host-mm.ts MmuNotifier), the interface lives here
// and the caller supplies the implementation (src/agent/, wired by the harness's session).
import type { DemandPaging } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import type { Kvm } from './kvm.js';
import { defineMutant } from './mutants.js';

export const DEMAND_PAGING_EEXIST_KILLS_READER = defineMutant({
  name: 'demand-paging-eexist-kills-reader',
  description: 'a uffd reader treats EEXIST from UFFDIO_COPY as an error and exits',
  source: 'BUG-19 (S3/p01, p14)',
  series: ['exit-on-missing'],
  killedBy: ['uffd-liveness', 'uffd-protocol'],
});

export const DEMAND_PAGING_DONTWAKE_WITHOUT_WAKE = defineMutant({
  name: 'demand-paging-dontwake-without-wake',
  description: 'a reader resolves with UFFDIO_COPY(DONTWAKE) and never issues UFFDIO_WAKE',
  source: 'BUG-20 (S3/p14)',
  series: ['exit-on-missing'],
  killedBy: ['uffd-liveness'],
});

export const DEMAND_PAGING_POPULATE_FALLBACK_DEAD = defineMutant({
  name: 'demand-paging-populate-fallback-dead',
  description: 'ready_page compares the return value with EEXIST, so the MADV_POPULATE_WRITE fallback never runs',
  source: 'BUG-21 (S3/p14)',
  series: ['exit-on-missing'],
  killedBy: ['uffd-liveness'],
});

/**
 * How a thread of the episode ended before the episode did (typed; properties/ judges them):
 * a vCPU whose KVM_RUN result leaves the protocol no way on, or a reader that left its loop
 * because an ioctl failed (`errno`) rather than through its pipe.
 */
export type ThreadEnd =
  | { readonly kind: 'vcpu-dead'; readonly vcpu: number; readonly gpa: number; readonly result: string }
  | { readonly kind: 'reader-exit'; readonly reader: number; readonly errno: 'EEXIST'; readonly hva: number };

/** What the protocol checks need besides the outcome (INV-36, INV-38), and the metrics. */
export interface EpisodeReport {
  /** hva page -> successful UFFDIO_COPYs into it. */
  readonly copies: Map<number, number>;
  readonly ends: ThreadEnd[];
  populateFallbacks: number;
  eexists: number;
  steps: number;
}

export interface DemandPagingAgent {
  /**
   * Runs one demand-paging episode against the VM. `enableMemfaultReasons` is the VMM's
   * KVM_ENABLE_CAP call (demand_paging_test -w), made by the engine's own ioctl path.
   */
  run(kvm: Kvm, cmd: DemandPaging, enableMemfaultReasons: () => void): { outcome: Outcome; report?: EpisodeReport };
}

/** The agents a caller hands to the engine; a command whose agent is missing is a wiring error. */
export interface EngineAgents {
  readonly demandPaging?: DemandPagingAgent;
}
