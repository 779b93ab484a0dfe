// The invariant catalog in code: one registry entry per invariant (properties/invariant.ts says
// what an entry may declare). docs/INVARIANTS.md mirrors it; test/docs.test.ts keeps the two in
// step. Every invariant names its source and is killed by at least one mutant.
import { checkRunOwner, engineRuns } from './concurrent-invariants.js';
import { outcomeMismatch } from '../model/observable.js';
import { seriesOn } from '../model/series.js';
import { kernelMismatch } from '../src/kvm/platform.js';
import type { SequenceStep, SequenceVerdict, StepContext } from './context.js';
import { memoryMismatch, pagesMismatch, presenceMismatch } from './differential.js';
import {
  checkBlockRules,
  checkBreakBeforeMake,
  checkLeafJustified,
  checkTableRefcounts,
  checkTlbCoherent,
} from './engine-invariants.js';
import { defineInvariant, inapplicable, type Invariant, type RunSetting } from './invariant.js';
import {
  checkMemfaultStep,
  checkReadonlyNoWrite,
  DirtyWriteTracker,
  readonlySnapshot,
  runsBefore,
} from './observers.js';
import {
  checkCmoCoverage,
  checkFastEqualsSlow,
  checkLockedMeansMapped,
  checkPrivateMaxLevel,
  checkRmp,
  checkTlbiChoice,
  checkUffdLiveness,
  checkUffdProtocol,
  checkUnlockKeepsStage2,
  checkUnmapOrdering,
  checkUserfaultEnableZaps,
  checkUserfaultNoZapOnDisable,
  slotsBefore,
} from './series-invariants.js';

/** kernel-agrees over a sequence: the first kernel result the spec does not allow (platform deviations apply). */
function firstKernelMismatch(steps: readonly SequenceStep[]): SequenceVerdict | null {
  for (const [at, step] of steps.entries()) {
    if (!step.spec || !step.kernel) continue;
    const verdict = kernelMismatch(step.spec, step.kernel);
    if (verdict.mismatch) return { at, messages: [verdict.mismatch] };
  }
  return null;
}

/** differential after one command: outcomes, and host memory at `hostPages` (null: every page). */
function differentialMismatch(ctx: StepContext, hostPages: ReadonlySet<number> | null): string[] {
  const out: string[] = [];
  const mismatch = outcomeMismatch(ctx.specOutcome, ctx.engineOutcome);
  if (mismatch) out.push(mismatch);
  const host = ctx.engine.kvm.host;
  if (hostPages) out.push(...pagesMismatch('host', ctx.spec.mm.memory, (p) => host.pageContents(p), hostPages));
  else out.push(...memoryMismatch('host', ctx.spec.mm.memory, ctx.engine.hostMemory()));
  // guest_memfd contents are compared whole: cheap (most runs have none), and their pages are not tracked.
  const gmems = ctx.spec.gmems.length ? ctx.engine.gmemMemory() : [];
  for (const [i, g] of ctx.spec.gmems.entries())
    out.push(...memoryMismatch(`gmem#${i}`, g.memory, gmems[i] ?? new Map()));
  // Which host pages exist is observable only through fast-only GUP and userfaultfd.
  if (seriesOn(ctx.spec.config, 'exit-on-missing'))
    out.push(...presenceMismatch(ctx.spec.mm, ctx.engine.kvm.host.presence()));
  return out;
}

export const INVARIANTS = [
  defineInvariant({
    id: 'differential',
    statement: 'spec and engine agree on every observable result and on host and guest_memfd memory contents',
    source: 'DESIGN.md "Observable equality"; api.rst',
    // Per command only the host pages either side changed (ctx.touched); all of them at the end.
    check: (ctx) => differentialMismatch(ctx, ctx.touched?.hostPages ?? null),
    full: (ctx) => differentialMismatch(ctx, null),
  }),
  defineInvariant({
    id: 'tlb-coherent',
    statement:
      'after every command each TLB entry equals the current page-table translation (no stale TLB entry after an ' +
      'invalidation returns)',
    source: 'INV-1, INV-2 (S4); SPEC-DIGEST 1.7',
    check: (ctx) => checkTlbCoherent(ctx.engine.kvm, ctx.touched?.gfns ?? null),
    full: (ctx) => checkTlbCoherent(ctx.engine.kvm),
  }),
  defineInvariant({
    id: 'leaf-justified',
    statement:
      'every stage-2 leaf lies in one memslot, maps the frame the host (or guest_memfd) has there now, and is ' +
      'writable only if slot, host mapping and dirty log allow',
    source: 'INV-1, INV-22, INV-23, INV-39, INV-40',
    check: (ctx) => checkLeafJustified(ctx.engine.kvm, ctx.touched?.gfns ?? null),
    full: (ctx) => checkLeafJustified(ctx.engine.kvm),
  }),
  defineInvariant({
    id: 'block-rules',
    statement:
      'no block mapping while dirty logging or USERFAULT is on, across a memslot edge, or with gpa and hva ' +
      'misaligned modulo the block size',
    source: 'INV-9 (S0); SPEC-DIGEST 1.2 (S3/p09 api.rst)',
    check: (ctx) => checkBlockRules(ctx.engine.kvm, ctx.touched?.gfns ?? null),
    full: (ctx) => checkBlockRules(ctx.engine.kvm),
  }),
  defineInvariant({
    id: 'pgtable-refcount',
    statement:
      'each table page holds one reference plus one per valid entry, no freed table page is reachable, and no ' +
      'reference is taken or dropped on a freed one',
    source: 'INV-5 (S4)',
    check: (ctx) => checkTableRefcounts(ctx.engine.kvm, ctx.events, ctx.touched),
    full: (ctx) => checkTableRefcounts(ctx.engine.kvm),
  }),
  defineInvariant({
    id: 'bbm',
    statement:
      'a valid PTE is replaced only via break-before-make: invalidate, complete a covering TLBI, then write the new ' +
      'entry',
    source: 'INV-3 (S4); ARM ARM break-before-make',
    check: (ctx) => checkBreakBeforeMake(ctx.events),
  }),
  defineInvariant({
    id: 'memfault-contract',
    statement:
      'KVM_EXIT_MEMORY_FAULT payload is present only with rc -1 and errno EFAULT/EHWPOISON, covers the faulting ' +
      'access, is never left over, and x86 annotates every EFAULT',
    source: 'UPSTREAM.md (api.rst KVM_CAP_MEMORY_FAULT_INFO); INV-14, INV-15, INV-17, INV-20',
    snapshot: runsBefore,
    check: (ctx, _state, before) => checkMemfaultStep(ctx, before),
  }),
  defineInvariant({
    id: 'kvm-run-owner',
    statement: "only the thread running a vCPU writes that vCPU's kvm_run; VMM calls write none",
    source: 'INV-16 (S3, Sean 03-21); per step of a concurrent run: properties/concurrent-invariants.ts',
    snapshot: (pre) => engineRuns(pre.engine),
    check: (ctx, _state, before) => checkRunOwner(ctx.cmd, before, engineRuns(ctx.engine)),
  }),
  defineInvariant({
    id: 'dirty-no-lost-write',
    statement: 'dirty logging never loses a guest write between two harvests',
    source: 'INV-22 (S3/p11 context)',
    init: () => new DirtyWriteTracker(),
    // The tracker reads the spec's slots as the command left them (the state object it was given).
    snapshot: (pre) => pre.spec,
    check: (ctx, tracker, spec) => tracker.observe(spec, ctx.cmd, ctx.engineOutcome),
  }),
  defineInvariant({
    id: 'readonly-no-write',
    statement: 'a guest write to a READONLY memslot never changes memory',
    source: 'INV-39 (S3/p09 api.rst)',
    snapshot: readonlySnapshot,
    check: (ctx, _state, watch) => checkReadonlyNoWrite(ctx, watch),
  }),
  defineInvariant({
    // Once per sequence, after the batch ran on the kernel (src/kvm/): Session.finish().
    id: 'kernel-agrees',
    statement:
      'the real kernel (check --backend kvm) returns, for every command, a result the spec allows, ' +
      'under the platform profile in force',
    source: 'UPSTREAM.md; the issue-4 conformance tables (conformance/cases.ts)',
    backend: 'kvm',
    sequence: firstKernelMismatch,
  }),
  defineInvariant({
    id: 'userfault-enable-zaps',
    statement: 'when a FLAGS_ONLY change turning KVM_MEM_USERFAULT on returns, the slot has no stage-2 mapping',
    source: 'INV-8 (S0, Oliver)',
    series: ['userfault'],
    snapshot: slotsBefore,
    check: (ctx, _state, slots) => checkUserfaultEnableZaps(ctx, slots),
  }),
  defineInvariant({
    id: 'userfault-no-zap-on-disable',
    statement:
      'with zapOnUserfaultDisable off (OQ-7, favoured), turning KVM_MEM_USERFAULT off changes no stage-2 entry (no ' +
      'CMO storm)',
    source: 'INV-10, BUG-18 (S0, Oliver)',
    series: ['userfault'],
    snapshot: slotsBefore,
    check: (ctx, _state, slots) => checkUserfaultNoZapOnDisable(ctx, slots),
  }),
  defineInvariant({
    id: 'rmp-follows-allocation',
    statement:
      'RMP assignment follows guest_memfd allocation (at allocation: every allocated page assigned, 2 MiB entries ' +
      'never shrunk by a 4 KiB mapping; at fault: every private mapping assigned); no double conversion or revert ' +
      'of an unconverted page',
    source: 'INV-32, INV-33 (S1, Sean)',
    series: ['gmem-private'],
    arches: ['x86'],
    check: checkRmp,
  }),
  defineInvariant({
    id: 'private-max-level',
    statement:
      'a private stage-2 mapping is no larger than its guest_memfd folio or the RMP entry of any page under it',
    source: 'INV-34 (S1, Sean: "clamp the max_level at the RMP")',
    series: ['gmem-private'],
    arches: ['x86'],
    check: checkPrivateMaxLevel,
  }),
  defineInvariant({
    id: 'lock-unlock-keeps-stage2',
    statement: 'unlocking a memslot changes no stage-2 entry (it only unpins)',
    source: 'INV-29 (S2)',
    series: ['arm64-lock'],
    arches: ['arm64'],
    check: checkUnlockKeepsStage2,
  }),
  defineInvariant({
    id: 'locked-means-mapped',
    statement:
      'from a successful lock until unlock every page of the slot is mapped at stage 2 with at least the lock ' +
      'permissions',
    source: 'INV-31 (S2 rationale: SPE never takes a stage-2 fault)',
    series: ['arm64-lock'],
    arches: ['arm64'],
    check: checkLockedMeansMapped,
  }),
  defineInvariant({
    id: 'unmap-ordering',
    statement:
      'in every unmap: PTE invalid and published (DSB), then a covering TLBI completed (DSB), then CMOs; no table ' +
      'page freed while that TLBI is pending; all before return',
    source: 'INV-1, INV-3, INV-5 (S4, Oliver 04-04)',
    series: ['arm64-unmap'],
    arches: ['arm64'],
    check: checkUnmapOrdering,
  }),
  defineInvariant({
    id: 'cmo-coverage',
    statement: 'without FEAT_S2FWB every leaf removed by any unmap path is cleaned and invalidated to PoC',
    source: 'INV-4 (S4, Oliver 03-29)',
    series: ['arm64-unmap'],
    arches: ['arm64'],
    check: checkCmoCoverage,
  }),
  defineInvariant({
    id: 'tlbi-choice',
    statement: 'range TLBIs only with FEAT_TLBIRANGE; otherwise per-IPA TLBIs or a full VMID flush',
    source: 'INV-7 (S4)',
    series: ['arm64-unmap'],
    arches: ['arm64'],
    check: checkTlbiChoice,
  }),
  defineInvariant({
    id: 'fast-equals-slow',
    statement:
      'the fast table-disconnect unmap leaves the same tables, refcounts and freed pages as the slow walker on the ' +
      'same tree and range',
    source: 'INV-6 (S4)',
    series: ['arm64-unmap'],
    arches: ['arm64'],
    check: checkFastEqualsSlow,
  }),
  defineInvariant({
    id: 'linearizable',
    statement:
      "the history of a concurrent case (each command's invocation and response, per thread) equals some " +
      'sequential order of its commands, consistent with real-time order, that the spec allows (alternatives ' +
      "included) and that ends with the engine's host and guest_memfd memory",
    source: 'DESIGN.md "concurrency by controlled interleaving"; issue 10 oracle (a); Herlihy & Wing',
    // No per-command hook: the concurrent runner (src/harness/concurrent.ts) checks the whole history.
  }),
  defineInvariant({
    id: 'uffd-liveness',
    statement:
      'a VMM following the userfaultfd demand-paging protocol always makes progress: every vCPU finishes, none ' +
      'sleeps or re-exits for ever',
    source: 'INV-21, INV-37 (S3/p09 doc, p14)',
    series: ['exit-on-missing'],
    check: checkUffdLiveness,
  }),
  defineInvariant({
    id: 'uffd-protocol',
    statement:
      'exactly one UFFDIO_COPY succeeds per missing page (the rest get EEXIST), and reader threads exit only ' +
      'through their pipe',
    source: 'INV-36, INV-38 (S3/p01, p02, p14)',
    series: ['exit-on-missing'],
    check: checkUffdProtocol,
  }),
] as const;

export type InvariantId = (typeof INVARIANTS)[number]['id'];
export const INVARIANT_IDS: readonly InvariantId[] = INVARIANTS.map((i) => i.id);

export function isInvariantId(id: string): id is InvariantId {
  return (INVARIANT_IDS as readonly string[]).includes(id);
}

/** The enabled invariants that apply in this setting, in registry order (the rest are skipped). */
export function applicableInvariants(ids: ReadonlySet<string>, setting: RunSetting): readonly Invariant<InvariantId>[] {
  return INVARIANTS.filter((inv) => ids.has(inv.id) && inapplicable(inv, setting) === null);
}

/**
 * The error for invariants named explicitly (--invariant) that cannot apply in this setting, one
 * line without the "error: " prefix; null when all can. Unnamed ones are skipped instead.
 */
export function applicabilityError(ids: readonly string[], setting: RunSetting): string | null {
  for (const inv of INVARIANTS) {
    const why = ids.includes(inv.id) ? inapplicable(inv, setting) : null;
    if (why) return `--invariant ${inv.id} ${why}`;
  }
  return null;
}
