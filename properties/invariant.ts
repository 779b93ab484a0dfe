// The one invariant mechanism. An invariant declares what it needs (series, architectures, backend)
// and up to four hooks: a snapshot before each command, a check after it (incremental where the
// invariant also declares a full check, run once at the end of the run), and a check of the whole
// sequence once the real kernel ran it. Its state lives in a fresh `init()` per run, so no
// invariant is wired into the session by hand and runs never share state.
import type { Arch } from '../model/abi.js';
import type { SeriesName } from '../model/series.js';
import type { PreContext, SequenceStep, SequenceVerdict, StepContext } from './context.js';

export type BackendName = 'model' | 'kvm';

export interface InvariantSpec<Id extends string, State, Snap> {
  readonly id: Id;
  readonly statement: string;
  readonly source: string;
  /** Series that must all be on (absent: upstream, always applies). */
  readonly series?: readonly SeriesName[];
  /** Architectures whose code paths it is about (absent: both). */
  readonly arches?: readonly Arch[];
  /** The backend it needs (kernel-agrees: the real kernel). */
  readonly backend?: 'kvm';
  /** Per-run state, created fresh for every run. */
  readonly init?: () => State;
  /** Taken before every command; the check of that command receives it. */
  readonly snapshot?: (pre: PreContext, state: State) => Snap;
  /**
   * Violations after one command, as sentences. With `full` declared this may be incremental: it
   * looks only at what the command touched (ctx.touched), and `full` covers the rest.
   */
  readonly check?: (ctx: StepContext, state: State, snap: Snap) => readonly string[];
  /**
   * The full check of the whole state, run once after the last command of every run (and by the
   * incremental-equals-full tests): what an incremental `check` cannot see is still caught, at the
   * last step, under the same id.
   */
  readonly full?: (ctx: StepContext, state: State) => readonly string[];
  /** After the sequence ran on the kernel: the first failing step, or null. */
  readonly sequence?: (steps: readonly SequenceStep[], state: State) => SequenceVerdict | null;
}

/** One run's instance of an invariant: its hooks bound to its own state. */
export interface InvariantRun<Id extends string = string> {
  readonly id: Id;
  readonly snapshot?: (pre: PreContext) => void;
  readonly check?: (ctx: StepContext) => readonly string[];
  readonly full?: (ctx: StepContext) => readonly string[];
  readonly sequence?: (steps: readonly SequenceStep[]) => SequenceVerdict | null;
}

/** A registry entry with its state type erased. */
export interface Invariant<Id extends string = string> {
  readonly id: Id;
  readonly statement: string;
  readonly source: string;
  readonly series?: readonly SeriesName[];
  readonly arches?: readonly Arch[];
  readonly backend?: 'kvm';
  readonly start: () => InvariantRun<Id>;
}

export function defineInvariant<const Id extends string, State = undefined, Snap = undefined>(
  spec: InvariantSpec<Id, State, Snap>,
): Invariant<Id> {
  const { init, snapshot, check, full, sequence, ...info } = spec;
  return {
    ...info,
    start: (): InvariantRun<Id> => {
      const state = init?.() as State;
      // Set by snapshot() before the command whose check() reads it.
      let snap = undefined as Snap;
      return {
        id: spec.id,
        snapshot: snapshot
          ? (pre) => {
              snap = snapshot(pre, state);
            }
          : undefined,
        check: check ? (ctx) => check(ctx, state, snap) : undefined,
        full: full ? (ctx) => full(ctx, state) : undefined,
        sequence: sequence ? (steps) => sequence(steps, state) : undefined,
      };
    },
  };
}

/** The configuration a run checks in, as far as applicability goes. */
export interface RunSetting {
  readonly series: readonly SeriesName[];
  readonly arches: readonly Arch[];
  readonly backend: BackendName;
}

/** Why the invariant cannot apply in this setting (as a fix the user can make), or null. */
export function inapplicable(inv: Invariant, setting: RunSetting): string | null {
  const missing = (inv.series ?? []).filter((s) => !setting.series.includes(s));
  if (missing.length) return `needs --series ${missing.join(',')}`;
  if (inv.backend === 'kvm' && setting.backend !== 'kvm') return 'needs --backend kvm';
  if (inv.arches && !inv.arches.some((a) => setting.arches.includes(a)))
    return `is about ${inv.arches.join('/')} only (add --arch ${inv.arches[0]})`;
  return null;
}
