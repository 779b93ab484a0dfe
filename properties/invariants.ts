// The invariant catalog in code. docs/INVARIANTS.md mirrors it; test/invariants-doc.test.ts keeps
// the two in step. Every invariant names its source and is killed by at least one mutant.
import { KVM_EXIT_MEMORY_FAULT } from '../model/abi.js';
import { memoryMismatch, outcomeMismatch } from './differential.js';
import {
  checkBlockRules, checkBreakBeforeMake, checkLeafJustified, checkTableRefcounts, checkTlbCoherent,
} from './engine-invariants.js';
import { accessesOf, checkMemfaultContract } from './observers.js';
import type { StepContext } from './context.js';

export interface InvariantDef {
  readonly id: string;
  readonly statement: string;
  readonly source: string;
  /** Violations found after one command (the dirty and readonly observers live in the session). */
  readonly check?: (ctx: StepContext) => string[];
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
      ctx.spec.gmems.forEach((g, i) => out.push(...memoryMismatch(`gmem#${i}`, g.memory, gmems[i] ?? new Map())));
      return out;
    },
  },
  {
    id: 'tlb-coherent',
    statement: 'after every command each TLB entry equals the current page-table translation (no stale TLB entry after an invalidation returns)',
    source: 'INV-1, INV-2 (S4); SPEC-DIGEST 1.7',
    check: (ctx: StepContext): string[] => checkTlbCoherent(ctx.engine.kvm),
  },
  {
    id: 'leaf-justified',
    statement: 'every stage-2 leaf lies in one memslot, maps the frame the host (or guest_memfd) has there now, and is writable only if slot, host mapping and dirty log allow',
    source: 'INV-1, INV-22, INV-23, INV-39, INV-40',
    check: (ctx: StepContext): string[] => checkLeafJustified(ctx.engine.kvm),
  },
  {
    id: 'block-rules',
    statement: 'no block mapping while dirty logging, across a memslot edge, or with gpa and hva misaligned modulo the block size',
    source: 'INV-9 (S0); SPEC-DIGEST 1.2 (S3/p09 api.rst)',
    check: (ctx: StepContext): string[] => checkBlockRules(ctx.engine.kvm),
  },
  {
    id: 'pgtable-refcount',
    statement: 'each table page holds one reference plus one per valid entry, and no freed table page is reachable',
    source: 'INV-5 (S4)',
    check: (ctx: StepContext): string[] => checkTableRefcounts(ctx.engine.kvm),
  },
  {
    id: 'bbm',
    statement: 'a valid PTE is replaced only via break-before-make: invalidate, complete a covering TLBI, then write the new entry',
    source: 'INV-3 (S4); ARM ARM break-before-make',
    check: (ctx: StepContext): string[] => checkBreakBeforeMake(ctx.events),
  },
  {
    id: 'memfault-contract',
    statement: 'KVM_EXIT_MEMORY_FAULT payload is present only with rc -1 and errno EFAULT/EHWPOISON, covers the faulting access, is never left over, and x86 annotates every EFAULT',
    source: 'UPSTREAM.md (api.rst KVM_CAP_MEMORY_FAULT_INFO); INV-14, INV-15, INV-17, INV-20',
    check: (ctx: StepContext): string[] => {
      const out: string[] = [];
      for (const [label, outcome, runs] of [['spec', ctx.specOutcome, ctx.before.specRuns], ['engine', ctx.engineOutcome, ctx.before.engineRuns]] as const) {
        for (const a of accessesOf(ctx.cmd, outcome)) {
          out.push(...checkMemfaultContract(ctx.spec.arch, a.access, a.outcome, runs[a.access.vcpu]!).map((m) => `${label}: ${m}`));
        }
      }
      const kvm = ctx.engine.kvm;
      for (const a of accessesOf(ctx.cmd, ctx.engineOutcome)) {
        const o = a.outcome;
        const claimsPayload = o.kind === 'run' && o.rc === -1 && o.errno === 'EFAULT' && o.run.exitReason === KVM_EXIT_MEMORY_FAULT;
        if (claimsPayload && kvm.payloadWrittenInRun[a.access.vcpu] !== kvm.runSerial) out.push('engine: memory_fault payload was written by an earlier KVM_RUN');
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
] as const satisfies readonly InvariantDef[];

export type InvariantId = (typeof INVARIANTS)[number]['id'];
export const INVARIANT_IDS: readonly InvariantId[] = INVARIANTS.map((i) => i.id);

export function isInvariantId(id: string): id is InvariantId {
  return (INVARIANT_IDS as readonly string[]).includes(id);
}
