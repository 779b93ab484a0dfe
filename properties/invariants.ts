// The invariant catalog in code. docs/INVARIANTS.md mirrors it; test/invariants-doc.test.ts keeps
// the two in step. Every invariant names its source and is killed by at least one mutant.
import { isMemoryFaultReason, outcomeMismatch } from '../model/observable.js';
import { memoryMismatch, presenceMismatch } from './differential.js';
import {
  checkBlockRules,
  checkBreakBeforeMake,
  checkLeafJustified,
  checkTableRefcounts,
  checkTlbCoherent,
} from './engine-invariants.js';
import { accessesOf, checkMemfaultContract } from './observers.js';
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
} from './series-invariants.js';
import { seriesOn, type SeriesName } from '../model/series.js';
import type { StepContext } from './context.js';

export interface InvariantDef {
  readonly id: string;
  readonly statement: string;
  readonly source: string;
  /** Violations found after one command (the dirty and readonly observers live in the session). */
  readonly check?: (ctx: StepContext) => string[];
  /** The series it belongs to; it is vacuous while they are off (absent: upstream, always checked). */
  readonly series?: readonly SeriesName[];
}

export const INVARIANTS = [
  {
    id: 'differential',
    statement: 'spec and engine agree on every observable result and on host and guest_memfd memory contents',
    source: 'DESIGN.md "Observable equality"; api.rst',
    check: (ctx: StepContext): string[] => {
      const out: string[] = [];
      const mismatch = outcomeMismatch(ctx.specOutcome, ctx.engineOutcome);
      if (mismatch) out.push(mismatch);
      out.push(...memoryMismatch('host', ctx.spec.mm.memory, ctx.engine.hostMemory()));
      const gmems = ctx.engine.gmemMemory();
      for (const [i, g] of ctx.spec.gmems.entries())
        out.push(...memoryMismatch(`gmem#${i}`, g.memory, gmems[i] ?? new Map()));
      // Which host pages exist is observable only through fast-only GUP and userfaultfd.
      if (seriesOn(ctx.spec.config, 'exit-on-missing'))
        out.push(...presenceMismatch(ctx.spec.mm, ctx.engine.kvm.host.presence()));
      return out;
    },
  },
  {
    id: 'tlb-coherent',
    statement:
      'after every command each TLB entry equals the current page-table translation (no stale TLB entry after an invalidation returns)',
    source: 'INV-1, INV-2 (S4); SPEC-DIGEST 1.7',
    check: (ctx: StepContext): string[] => checkTlbCoherent(ctx.engine.kvm),
  },
  {
    id: 'leaf-justified',
    statement:
      'every stage-2 leaf lies in one memslot, maps the frame the host (or guest_memfd) has there now, and is writable only if slot, host mapping and dirty log allow',
    source: 'INV-1, INV-22, INV-23, INV-39, INV-40',
    check: (ctx: StepContext): string[] => checkLeafJustified(ctx.engine.kvm),
  },
  {
    id: 'block-rules',
    statement:
      'no block mapping while dirty logging or USERFAULT is on, across a memslot edge, or with gpa and hva misaligned modulo the block size',
    source: 'INV-9 (S0); SPEC-DIGEST 1.2 (S3/p09 api.rst)',
    check: (ctx: StepContext): string[] => checkBlockRules(ctx.engine.kvm),
  },
  {
    id: 'pgtable-refcount',
    statement:
      'each table page holds one reference plus one per valid entry, no freed table page is reachable, and no reference is taken or dropped on a freed one',
    source: 'INV-5 (S4)',
    check: (ctx: StepContext): string[] => checkTableRefcounts(ctx.engine.kvm, ctx.events),
  },
  {
    id: 'bbm',
    statement:
      'a valid PTE is replaced only via break-before-make: invalidate, complete a covering TLBI, then write the new entry',
    source: 'INV-3 (S4); ARM ARM break-before-make',
    check: (ctx: StepContext): string[] => checkBreakBeforeMake(ctx.events),
  },
  {
    id: 'memfault-contract',
    statement:
      'KVM_EXIT_MEMORY_FAULT payload is present only with rc -1 and errno EFAULT/EHWPOISON, covers the faulting access, is never left over, and x86 annotates every EFAULT',
    source: 'UPSTREAM.md (api.rst KVM_CAP_MEMORY_FAULT_INFO); INV-14, INV-15, INV-17, INV-20',
    check: (ctx: StepContext): string[] => {
      const out: string[] = [];
      for (const [label, outcome, runs] of [
        ['spec', ctx.specOutcome, ctx.before.specRuns],
        ['engine', ctx.engineOutcome, ctx.before.engineRuns],
      ] as const) {
        for (const a of accessesOf(ctx.cmd, outcome)) {
          out.push(
            ...checkMemfaultContract(ctx.spec, a.access, a.outcome, runs[a.access.vcpu]!).map((m) => `${label}: ${m}`),
          );
        }
      }
      const kvm = ctx.engine.kvm;
      for (const a of accessesOf(ctx.cmd, ctx.engineOutcome)) {
        const o = a.outcome;
        const claimsPayload =
          o.kind === 'run' &&
          (o.rc === 0 || o.errno === 'EFAULT') &&
          isMemoryFaultReason(o.run.exitReason) &&
          o.run.payload.kind === 'memoryFault';
        if (claimsPayload && kvm.payloadWrittenInRun[a.access.vcpu] !== kvm.runSerial)
          out.push('engine: memory_fault payload was written by an earlier KVM_RUN');
      }
      return out;
    },
  },
  {
    id: 'dirty-no-lost-write',
    statement: 'dirty logging never loses a guest write between two harvests',
    source: 'INV-22 (S3/p11 context)',
  },
  {
    id: 'readonly-no-write',
    statement: 'a guest write to a READONLY memslot never changes memory',
    source: 'INV-39 (S3/p09 api.rst)',
  },
  {
    // Checked by the session once per sequence, after the batch ran on the kernel (src/kvm/).
    id: 'kernel-agrees',
    statement:
      'the real kernel (check --backend kvm) returns, for every command, a result the spec allows, under the platform profile in force',
    source: 'UPSTREAM.md; the issue-4 conformance tables (test/conformance/)',
  },
  {
    id: 'userfault-enable-zaps',
    statement: 'when a FLAGS_ONLY change turning KVM_MEM_USERFAULT on returns, the slot has no stage-2 mapping',
    source: 'INV-8 (S0, Oliver)',
    series: ['userfault'],
    check: checkUserfaultEnableZaps,
  },
  {
    id: 'userfault-no-zap-on-disable',
    statement:
      'with zapOnUserfaultDisable off (OQ-7, favoured), turning KVM_MEM_USERFAULT off changes no stage-2 entry (no CMO storm)',
    source: 'INV-10, BUG-18 (S0, Oliver)',
    series: ['userfault'],
    check: checkUserfaultNoZapOnDisable,
  },
  {
    id: 'rmp-follows-allocation',
    statement:
      'RMP assignment follows guest_memfd allocation (at allocation: every allocated page assigned, 2 MiB entries never shrunk by a 4 KiB mapping; at fault: every private mapping assigned); no double conversion or revert of an unconverted page',
    source: 'INV-32, INV-33 (S1, Sean)',
    series: ['gmem-private'],
    check: checkRmp,
  },
  {
    id: 'private-max-level',
    statement:
      'a private stage-2 mapping is no larger than its guest_memfd folio or the RMP entry of any page under it',
    source: 'INV-34 (S1, Sean: "clamp the max_level at the RMP")',
    series: ['gmem-private'],
    check: checkPrivateMaxLevel,
  },
  {
    id: 'lock-unlock-keeps-stage2',
    statement: 'unlocking a memslot changes no stage-2 entry (it only unpins)',
    source: 'INV-29 (S2)',
    series: ['arm64-lock'],
    check: checkUnlockKeepsStage2,
  },
  {
    id: 'locked-means-mapped',
    statement:
      'from a successful lock until unlock every page of the slot is mapped at stage 2 with at least the lock permissions',
    source: 'INV-31 (S2 rationale: SPE never takes a stage-2 fault)',
    series: ['arm64-lock'],
    check: checkLockedMeansMapped,
  },
  {
    id: 'unmap-ordering',
    statement:
      'in every unmap: PTE invalid and published (DSB), then a covering TLBI completed (DSB), then CMOs; no table page freed while that TLBI is pending; all before return',
    source: 'INV-1, INV-3, INV-5 (S4, Oliver 04-04)',
    series: ['arm64-unmap'],
    check: checkUnmapOrdering,
  },
  {
    id: 'cmo-coverage',
    statement: 'without FEAT_S2FWB every leaf removed by any unmap path is cleaned and invalidated to PoC',
    source: 'INV-4 (S4, Oliver 03-29)',
    series: ['arm64-unmap'],
    check: checkCmoCoverage,
  },
  {
    id: 'tlbi-choice',
    statement: 'range TLBIs only with FEAT_TLBIRANGE; otherwise per-IPA TLBIs or a full VMID flush',
    source: 'INV-7 (S4)',
    series: ['arm64-unmap'],
    check: checkTlbiChoice,
  },
  {
    id: 'fast-equals-slow',
    statement:
      'the fast table-disconnect unmap leaves the same tables, refcounts and freed pages as the slow walker on the same tree and range',
    source: 'INV-6 (S4)',
    series: ['arm64-unmap'],
    check: checkFastEqualsSlow,
  },
  {
    id: 'uffd-liveness',
    statement:
      'a VMM following the userfaultfd demand-paging protocol always makes progress: every vCPU finishes, none sleeps or re-exits for ever',
    source: 'INV-21, INV-37 (S3/p09 doc, p14)',
    series: ['exit-on-missing'],
    check: checkUffdLiveness,
  },
  {
    id: 'uffd-protocol',
    statement:
      'exactly one UFFDIO_COPY succeeds per missing page (the rest get EEXIST), and reader threads exit only through their pipe',
    source: 'INV-36, INV-38 (S3/p01, p02, p14)',
    series: ['exit-on-missing'],
    check: checkUffdProtocol,
  },
] as const satisfies readonly InvariantDef[];

export type InvariantId = (typeof INVARIANTS)[number]['id'];
export const INVARIANT_IDS: readonly InvariantId[] = INVARIANTS.map((i) => i.id);

export function isInvariantId(id: string): id is InvariantId {
  return (INVARIANT_IDS as readonly string[]).includes(id);
}
